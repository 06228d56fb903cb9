package inventorytest

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commercekit/commercekit/inventory"
)

// Clients is how many goroutines the benchmarks run at once (b.SetParallelism rounds it up
// to a multiple of GOMAXPROCS), matching the 50 clients of the raw-limit figures.
const Clients = 50

// Benchmark measures h on the hot path: Reserve alone and Reserve+Commit, one line of one
// unit each, on one hot SKU and spread over 1,000 SKUs, from Clients goroutines. It reports
// ops/s (one op = one Reserve, or one Reserve plus its Commit).
func Benchmark(b *testing.B, h Harness) {
	for _, shape := range []struct {
		name   string
		skus   int
		commit bool
	}{
		{"Reserve/hot", 1, false},
		{"Reserve/spread1000", 1000, false},
		{"ReserveCommit/hot", 1, true},
		{"ReserveCommit/spread1000", 1000, true},
	} {
		b.Run(shape.name, func(b *testing.B) {
			inv, _ := h.New(b)
			bench(b, inv, shape.skus, shape.commit)
		})
	}
}

// SetParallelism makes b.RunParallel run at least Clients goroutines.
func SetParallelism(b *testing.B) {
	b.SetParallelism((Clients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
}

// ReserveHot runs Reserve of one unit of one hot SKU from Clients goroutines and reports
// its ops/s and, when raw (the storage's raw rate measured in the same run) is positive,
// its multiple of raw as x-raw. It returns the ops/s.
func ReserveHot(b *testing.B, inv *inventory.Inventory, raw float64) float64 {
	ops := bench(b, inv, 1, false)
	if raw > 0 {
		b.ReportMetric(ops/raw, "x-raw")
	}
	return ops
}

// ReserveCommit runs Reserve and then Commit of one unit of one of skus SKUs from Clients
// goroutines and reports and returns its ops/s (one op = one Reserve plus its Commit).
func ReserveCommit(b *testing.B, inv *inventory.Inventory, skus int) float64 {
	return bench(b, inv, skus, true)
}

// bench stocks skus SKUs and runs Reserve (+Commit) from Clients goroutines; it reports
// and returns the ops/s.
func bench(b *testing.B, inv *inventory.Inventory, skus int, commit bool) float64 {
	ctx := context.Background()
	names := make([]string, skus)
	for i := range names {
		names[i] = "bench-" + strconv.Itoa(i)
		if _, err := inv.SetStock(ctx, inventory.StockSetting{SKU: names[i], OnHand: inventory.MaxOnHand}); err != nil {
			b.Fatal(err)
		}
	}
	var seq atomic.Int64
	SetParallelism(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		line := []inventory.Line{{Qty: 1}}
		for pb.Next() {
			line[0].SKU = names[rand.IntN(skus)]
			id := "b" + strconv.FormatInt(seq.Add(1), 36)
			if _, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: line, TTL: time.Hour}); err != nil {
				b.Error(err)
				return
			}
			if commit {
				if err := inv.Commit(ctx, id); err != nil {
					b.Error(err)
					return
				}
			}
		}
	})
	ops := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(ops, "ops/s")
	return ops
}
