package saramaoutbox_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/observe"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
)

// BenchmarkRelay measures relay throughput, MySQL → Kafka: b.N committed events (100 keys)
// drained by Run (picked with FOR UPDATE SKIP LOCKED, produced in one Kafka transaction
// per batch, marked sent while the next batch is produced). Reports events/s; the batch
// size is the sub-benchmark parameter (0: the default, outbox.DefaultRelayBatchSize).
func BenchmarkRelay(b *testing.B) {
	for _, batch := range []int{100, 0, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			db := openDB(b)
			k := testenv.NewKafka(b)
			topic := k.Topic(b, "bench")
			published := &publishedCounter{done: make(chan struct{}), want: int64(b.N)}
			opts := []outbox.Option{outbox.WithObserver(published)}
			if batch > 0 {
				opts = append(opts, outbox.WithBatchSize(batch))
			}
			r, err := outbox.NewRelay(db, newPublisher(b, k), opts...)
			require.NoError(b, err)
			outboxtest.Fill(b, db, topic, b.N)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			b.ResetTimer()
			go func() { done <- r.Run(ctx) }()
			<-published.done
			b.StopTimer()
			cancel()
			require.NoError(b, <-done)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// publishedCounter closes done once the relay has published and marked want events.
type publishedCounter struct {
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (c *publishedCounter) Observe(e observe.Event) {
	if e.Name != "published" {
		return
	}
	if total := c.n.Add(e.N); total >= c.want && total-e.N < c.want {
		close(c.done)
	}
}

// BenchmarkConsumer measures consumer throughput, Kafka → MySQL with dedup: a consumer
// group applies b.N relayed events, each handler batch in one transaction with one
// set-based dedup query and one multi-row insert of processed records plus the handler's
// own multi-row insert. Reports events/s from the first handler call to the last (group
// join excluded); the handler batch size is a sub-benchmark parameter, and the lease window
// the other: "steady" a Consumer past its window (a nanosecond), as a healthy stream runs,
// "leasing" one leasing every batch (outbox.AlwaysLease), as one does for a minute after
// it starts or fails.
func BenchmarkConsumer(b *testing.B) {
	for _, batch := range []int{10, 100} {
		for _, lease := range outboxtest.LeaseWindows() {
			b.Run(fmt.Sprintf("batch=%d/%s", batch, lease.Name), func(b *testing.B) {
				db := openDB(b)
				k := testenv.NewKafka(b)
				topic := k.Topic(b, "bench")
				outboxtest.Fill(b, db, topic, b.N)
				relayAll(b, db, newPublisher(b, k))

				var applied atomic.Int64
				var first, last atomic.Int64
				c, err := outbox.NewConsumer(db, "bench", func(ctx context.Context, tx bun.Tx, events []outbox.Event) error {
					first.CompareAndSwap(0, time.Now().UnixNano())
					return outboxtest.Record(ctx, tx, "bench", events)
				}, outbox.WithBatchSize(batch), outbox.WithLeaseWindow(lease.Window), outbox.WithObserver(appliedCounter{n: &applied, last: &last}))
				require.NoError(b, err)
				b.ResetTimer()
				runGroup(b, k, "bench", testkit.Must(saramaoutbox.NewConsumerHandler(c))(b), topic)
				for applied.Load() < int64(b.N) {
					time.Sleep(time.Millisecond)
				}
				b.StopTimer()
				if span := time.Duration(last.Load() - first.Load()); span > 0 {
					b.ReportMetric(float64(b.N)/span.Seconds(), "events/s")
				}
			})
		}
	}
}

// appliedCounter counts the events a consumer applied and when it last applied some.
type appliedCounter struct {
	n, last *atomic.Int64
}

func (a appliedCounter) Observe(e observe.Event) {
	if e.Name == "applied" {
		a.n.Add(e.N)
		a.last.Store(time.Now().UnixNano())
	}
}
