package outbox_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

// BenchmarkAdd measures the writer: one transaction per op adding one event to one of 100
// aggregates (sequence upsert + read-back + insert, under the transaction of the caller).
func BenchmarkAdd(b *testing.B) {
	for _, be := range testenv.Databases() {
		b.Run(be.Name, func(b *testing.B) {
			db := outboxtest.Prepare(b, be.Open(b))
			ctx := context.Background()
			i := 0
			for b.Loop() {
				_, err := outbox.Add(ctx, db, outbox.Event{
					Topic: "orders", Key: fmt.Sprintf("key-%03d", i%100), Type: "order.placed", Payload: []byte(`{"total":35000}`),
				})
				require.NoError(b, err)
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkConsumerApply measures the dedup core alone: Apply of batches of 100 events,
// one transaction each (dedup SELECT, handler multi-row insert, processed multi-row
// insert); dup=50% re-delivers every other batch.
func BenchmarkConsumerApply(b *testing.B) {
	for _, be := range testenv.Databases() {
		for _, dupEvery := range []int{0, 2} {
			name := fmt.Sprintf("%s/dup=%d%%", be.Name, map[int]int{0: 0, 2: 50}[dupEvery])
			b.Run(name, func(b *testing.B) {
				db := outboxtest.Prepare(b, be.Open(b))
				ctx := context.Background()
				c, err := outbox.NewConsumer(db, "bench", outboxtest.RecordingHandler("bench"))
				require.NoError(b, err)
				var prev []outbox.Event
				i := 0
				for b.Loop() {
					batch := fakeEvents(100, 10)
					if dupEvery > 0 && i%dupEvery == 1 {
						batch = prev
					}
					_, err := c.Apply(ctx, batch)
					require.NoError(b, err)
					prev = batch
					i++
				}
				b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// BenchmarkEmbedded measures the embedded mode end to end on each database: b.N committed
// events relayed in batches of 100 to an in-process consumer that records them, past its
// lease window ("steady", as a healthy stream runs) or leasing every batch ("leasing", as
// for a minute after it starts or fails).
func BenchmarkEmbedded(b *testing.B) {
	for _, be := range testenv.Databases() {
		for _, lease := range outboxtest.LeaseWindows() {
			benchmarkEmbedded(b, be, lease)
		}
	}
}

func benchmarkEmbedded(b *testing.B, be testenv.Database, lease outboxtest.LeaseWindow) {
	b.Run(be.Name+"/"+lease.Name, func(b *testing.B) {
		db := outboxtest.Prepare(b, be.Open(b))
		ctx := context.Background()
		c, err := outbox.NewConsumer(db, "bench", outboxtest.RecordingHandler("bench"), outbox.WithLeaseWindow(lease.Window))
		require.NoError(b, err)
		d, err := outbox.NewDispatcher(outbox.Subscription{Topic: "orders", Consumer: c})
		require.NoError(b, err)
		r, err := outbox.NewRelay(db, d)
		require.NoError(b, err)
		outboxtest.Fill(b, db, "orders", b.N)
		b.ResetTimer()
		for sent := 0; sent < b.N; {
			n, err := r.RelayOnce(ctx)
			require.NoError(b, err)
			sent += n
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}
