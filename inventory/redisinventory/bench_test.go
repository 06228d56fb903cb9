package redisinventory_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/inventory/inventorytest"
)

// rawLua is the one-line check-and-decrement of tools/raw-limits.
const rawLua = `local s=tonumber(redis.call('GET',KEYS[1])) local n=tonumber(ARGV[1]) if s==nil or s<n then return -1 end return redis.call('DECRBY',KEYS[1],n)`

// BenchmarkRawEvalSha is the floor under Reserve, measured from Go in the same run: the raw
// EVALSHA of tools/raw-limits through the same client from the same number of goroutines.
func BenchmarkRawEvalSha(b *testing.B) {
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
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
