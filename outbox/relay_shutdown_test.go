package outbox_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

// quick are the options of the relays under test: small batches and short pauses.
func quick(batch int) []outbox.Option {
	return []outbox.Option{outbox.WithBatchSize(batch), outbox.WithInterval(5 * time.Millisecond),
		outbox.WithBackoff(time.Millisecond, 10*time.Millisecond)}
}

// interleaved adds perKey events to each of keys, one transaction per event, round-robin.
func interleaved(t testing.TB, db *bun.DB, keys []string, perKey int) []outbox.Event {
	t.Helper()
	var out []outbox.Event
	for i := range perKey {
		for _, k := range keys {
			evs, err := outbox.Add(context.Background(), db, outbox.Event{Topic: "orders", Key: k, Type: "x", Payload: payload(i)})
			require.NoError(t, err)
			out = append(out, evs...)
		}
	}
	return out
}

// embedded returns a publisher that logs each batch and hands it to a Dispatcher feeding
// a recording consumer "projector", and a channel receiving the number of each call.
func embedded(t testing.TB, db *bun.DB) (*publishLog, outbox.Publisher, <-chan int) {
	c, err := outbox.NewConsumer(db, "projector", outboxtest.RecordingHandler("projector"))
	require.NoError(t, err)
	d, err := outbox.NewDispatcher(outbox.Subscription{Topic: "orders", Consumer: c})
	require.NoError(t, err)
	log := &publishLog{}
	calls := make(chan int, 1000)
	n := 0
	var mu sync.Mutex
	return log, outbox.PublisherFunc(func(ctx context.Context, events []outbox.Event) error {
		if err := d.Publish(ctx, events); err != nil {
			return err
		}
		_ = log.Publish(ctx, events)
		mu.Lock()
		n++
		calls <- n
		mu.Unlock()
		return nil
	}), calls
}

// runUntil runs run(ctx) (a Relay's or Consumer's Run) in the background and returns a
// function waiting for it to return nil.
func runUntil(t testing.TB, ctx context.Context, run func(context.Context) error) func() {
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	return func() {
		t.Helper()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(time.Minute):
			t.Fatal("Run did not return")
		}
	}
}

// TestRunCancelledWhilePublishingMarksWhatItPublished: the shutdown comes while the
// publisher is taking a batch, which it then accepts. Run marks that batch sent before it
// returns, on both backends.
func TestRunCancelledWhilePublishingMarksWhatItPublished(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		want := addEvents(t, db, "orders", 2, 3)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		log := &publishLog{}
		r, err := outbox.NewRelay(db, outbox.PublisherFunc(func(ctx context.Context, events []outbox.Event) error {
			cancel() // SIGTERM while the broker takes the batch
			return log.Publish(ctx, events)
		}))
		require.NoError(t, err)
		runUntil(t, ctx, r.Run)()
		assert.Equal(t, ids(want), ids(log.snapshot()))
		assert.Zero(t, outboxtest.Unsent(t, db), "what the publisher accepted is marked sent")
	})
}

// TestEmbeddedRunWithTwoConnections: the embedded mode with the pool at the documented
// minimum of two connections, full batches and the consumer
// writing through the same pool: no deadlock, each event applied once in order.
func TestEmbeddedRunWithTwoConnections(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	want := interleaved(t, db, []string{"a", "b", "c"}, 30)
	db.DB.SetMaxOpenConns(2)
	log, pub, _ := embedded(t, db)
	r, err := outbox.NewRelay(db, pub, quick(5)...)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runUntil(t, ctx, r.Run)
	require.Eventually(t, outboxtest.Drained(db), 2*time.Minute, 10*time.Millisecond, "the outbox to drain")
	cancel()
	wait()
	assert.Zero(t, outboxtest.RequireArrived(t, log.snapshot(), want))
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "projector"), want)
}
