package redisinventory_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/inventorytest"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// rawLua is the one-line check-and-decrement of tools/raw-limits.
const rawLua = `local s=tonumber(redis.call('GET',KEYS[1])) local n=tonumber(ARGV[1]) if s==nil or s<n then return -1 end return redis.call('DECRBY',KEYS[1],n)`

// BenchmarkRawEvalSha is the floor under Reserve, measured from Go in the same run: the raw
// EVALSHA of tools/raw-limits through the same client from the same number of goroutines.
func BenchmarkRawEvalSha(b *testing.B) { rawEvalSha(b) }

// BenchmarkHotSKU measures Reserve of one unit of one hot SKU from 50 goroutines on the
// plain backend and on the journaled one (Durable, MySQL + Redis), next to the raw EVALSHA
// in the same run, and reports ops/s, the multiple of the raw rate (x-raw) and, for
// Durable, of the plain backend's (x-plain):
//
//	go test -run '^$' -bench BenchmarkHotSKU -benchtime 5s ./inventory/redisinventory/
func BenchmarkHotSKU(b *testing.B) {
	var raw, plain float64
	b.Run("raw", func(b *testing.B) { raw = rawEvalSha(b) })
	b.Run("redis", func(b *testing.B) {
		plain = inventorytest.ReserveHot(b, inventory.New(redisinventory.New(testenv.Redis(b))), raw)
	})
	b.Run("durable", func(b *testing.B) {
		d, _, _ := newDurable(b)
		ops := inventorytest.ReserveHot(b, inventory.New(d), raw)
		if plain > 0 {
			b.ReportMetric(ops/plain, "x-plain")
		}
	})
}

// rawEvalSha runs the raw EVALSHA from 50 goroutines and reports and returns its ops/s.
func rawEvalSha(b *testing.B) float64 {
	ctx := context.Background()
	rdb := testenv.Redis(b)
	if err := rdb.Set(ctx, "{rawlimits}:stock", 1_000_000_000_000, 0).Err(); err != nil {
		b.Fatal(err)
	}
	script := redis.NewScript(rawLua)
	keys := []string{"{rawlimits}:stock"}
	inventorytest.SetParallelism(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := script.Run(ctx, rdb, keys, 1).Err(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	ops := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(ops, "ops/s")
	return ops
}
