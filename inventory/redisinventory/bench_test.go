package redisinventory_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
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
// plain backend and on the journaled one (Durable, MySQL + Redis), each with concurrent
// reservations combined (one script call, one journal transaction) and alone, next to the
// raw EVALSHA in the same run, and reports ops/s, the multiple of the raw rate (x-raw),
// the reservations a script call (or journal transaction) carried on average (per-batch)
// and the Redis server's CPU time per operation (redis-µs/op: less noisy than the rates on
// a loaded machine, as long as nothing else uses the server meanwhile):
//
//	go test -run '^$' -bench BenchmarkHotSKU -benchtime 5s ./inventory/redisinventory/
func BenchmarkHotSKU(b *testing.B) {
	var raw float64
	b.Run("raw", func(b *testing.B) {
		defer redisCPU(b, testenv.Redis(b))()
		raw = rawEvalSha(b)
	})
	for _, s := range []struct {
		name     string
		durable  bool
		maxBatch int
	}{
		{"redis", false, 0}, {"redisAlone", false, 1},
		{"durable", true, 0}, {"durableAlone", true, 1},
	} {
		b.Run(s.name, func(b *testing.B) {
			rdb := testenv.Redis(b)
			var be inventory.Backend = testkit.Must(redisinventory.New(rdb))(b)
			if s.durable {
				be, rdb, _ = newDurable(b)
			}
			if s.maxBatch > 0 {
				redisinventory.SetMaxBatch(be, s.maxBatch)
			}
			defer redisCPU(b, rdb)()
			batches0, calls0 := redisinventory.ReserveStats(be)
			inventorytest.ReserveHot(b, testkit.Must(inventory.New(be))(b), raw)
			batches, calls := redisinventory.ReserveStats(be)
			b.ReportMetric(float64(calls-calls0)/float64(max(batches-batches0, 1)), "per-batch")
		})
	}
}

// BenchmarkDurableReserveCommit measures Reserve and then Commit of one unit of one SKU
// from 50 goroutines on the journaled backend, and reports, besides ops/s (one op = one
// Reserve plus its Commit), the SQL transactions and statements (BEGIN and COMMIT
// included) and the Redis round trips per op. Reservations and resolutions are each
// combined into shared transactions; compare with the same benchmark on the code before
// (BenchmarkDurable/ReserveCommit/hot there) in one sitting:
//
//	go test -run '^$' -bench BenchmarkDurableReserveCommit -benchtime 5s ./inventory/redisinventory/
func BenchmarkDurableReserveCommit(b *testing.B) {
	_, rdb, db := newDurable(b)
	sql := &testkit.Statements{}
	d := testkit.Must(redisinventory.NewDurable(rdb, db.WithQueryHook(sql)))(b)
	var redisCalls atomic.Int64
	rdb.AddHook(countCalls{&redisCalls})
	inventorytest.ReserveCommit(b, testkit.Must(inventory.New(d))(b), 1)
	n := float64(b.N)
	b.ReportMetric(float64(sql.Begins.Load())/n, "sql-tx/op")
	b.ReportMetric(float64(sql.All.Load())/n, "sql-stmts/op")
	b.ReportMetric(float64(redisCalls.Load())/n, "redis-calls/op")
}

// countCalls is a go-redis hook counting round trips (a pipeline is one).
type countCalls struct{ n *atomic.Int64 }

func (h countCalls) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h countCalls) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h countCalls) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
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

// redisCPU returns a function reporting the CPU time the Redis server of rdb used since,
// per operation, as redis-µs/op.
func redisCPU(b *testing.B, rdb *redis.Client) func() {
	cpu := func() float64 {
		info, err := rdb.Info(context.Background(), "cpu").Result()
		if err != nil {
			b.Fatal(err)
		}
		var total float64
		for _, l := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(l, "used_cpu_sys:"); ok {
				total += parseFloat(b, v)
			} else if v, ok := strings.CutPrefix(l, "used_cpu_user:"); ok {
				total += parseFloat(b, v)
			}
		}
		return total
	}
	start := cpu()
	return func() { b.ReportMetric((cpu()-start)*1e6/float64(b.N), "redis-µs/op") }
}

func parseFloat(b *testing.B, s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		b.Fatal(err)
	}
	return f
}
