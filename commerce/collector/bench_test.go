package collector_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
)

// BenchmarkCollector measures the collector's throughput (events/s: decode, daily upserts,
// rollup marks and stream counts, plus the consumer's dedup and processed record) beside
// the consumer's raw dedup rate (the same consumer with a handler that does nothing), in
// batches of 100 payment-completed events of two lines over 100 products, in one run.
func BenchmarkCollector(b *testing.B) {
	testenv.EachDB(b, func(b *testing.B, db *bun.DB) {
		e := newEnv(b, db)
		raw, err := outbox.NewConsumer(db, "bench-raw", func(context.Context, bun.Tx, []outbox.Event) error { return nil })
		require.NoError(b, err)
		at := kst("2026-03-04", 12)
		batches := func(prefix string, n int) [][]outbox.Event {
			var out [][]outbox.Event
			for start := 0; start < n; start += 100 {
				var sales []sale
				for i := start; i < min(start+100, n); i++ {
					sales = append(sales, sale{order: fmt.Sprintf("%s-%d", prefix, i), at: at.Add(time.Duration(i) * time.Second),
						lines: map[string]int64{fmt.Sprintf("p%02d", i%100): 1, fmt.Sprintf("p%02d", (i*7+3)%100): 2}})
				}
				out = append(out, events(sales...))
			}
			return out
		}
		run := func(name string, c *outbox.Consumer) float64 {
			work := batches(name, b.N)
			start := time.Now()
			for _, batch := range work {
				require.NoError(b, c.Deliver(ctx, batch))
			}
			rate := float64(b.N) / time.Since(start).Seconds()
			b.ReportMetric(rate, name+"-events/s")
			return rate
		}
		b.ResetTimer()
		rawRate := run("dedup", raw)
		colRate := run("collector", e.consumer)
		b.ReportMetric(colRate/rawRate, "collector/dedup")
	})
}
