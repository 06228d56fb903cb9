package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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

// publishLog is a Publisher that records what it is given, in order.
type publishLog struct {
	mu     sync.Mutex
	events []outbox.Event
}

func (l *publishLog) Publish(_ context.Context, events []outbox.Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, events...)
	return nil
}

func (l *publishLog) snapshot() []outbox.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]outbox.Event(nil), l.events...)
}

func ids(events []outbox.Event) []string {
	out := make([]string, len(events))
	for i, ev := range events {
		out[i] = ev.ID
	}
	return out
}

// TestRelayEmbeddedAppliesEachEventOnceInOrder: relay + Dispatcher + Consumer, the embedded
// mode, with batch sizes that do not divide the event count.
func TestRelayEmbeddedAppliesEachEventOnceInOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		c, err := outbox.NewConsumer(db, "projector", outboxtest.RecordingHandler("projector"), outbox.WithBatchSize(7))
		require.NoError(t, err)
		d, err := outbox.NewDispatcher(outbox.Subscription{Topic: "orders", Consumer: c})
		require.NoError(t, err)
		r, err := outbox.NewRelay(db, d, outbox.WithBatchSize(13))
		require.NoError(t, err)
		want := addEvents(t, db, "orders", 5, 40)
		relayUntilDone(t, r, db)
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "projector"), want)
	})
}

// TestRelayPublishesLateCommits: an event whose transaction commits after a newer event was
// published is still published (the relay selects unsent rows, not a cursor).
func TestRelayPublishesLateCommits(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	ctx := context.Background()
	log := &publishLog{}
	r, err := outbox.NewRelay(db, log)
	require.NoError(t, err)

	slow, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer slow.Rollback()
	late, err := outbox.Add(ctx, slow, outbox.Event{Topic: "orders", Key: "a", Type: "x", Payload: []byte(`{}`)})
	require.NoError(t, err)
	early, err := outbox.Add(ctx, db, outbox.Event{Topic: "orders", Key: "b", Type: "x", Payload: []byte(`{}`)})
	require.NoError(t, err)
	require.Less(t, late[0].ID, early[0].ID, "the late event is older")

	n, err := r.RelayOnce(ctx)
	require.NoError(t, err, "the relay skips the uncommitted row instead of waiting for it")
	assert.Equal(t, 1, n)
	require.NoError(t, slow.Commit())
	n, err = r.RelayOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, []string{early[0].ID, late[0].ID}, ids(log.snapshot()))
}

// TestRelayNeverOvertakesALockedHead: while another relay holds a stream's first unsent
// event, this relay publishes no later event of that stream, but goes on with the others.
func TestRelayNeverOvertakesALockedHead(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	ctx := context.Background()
	k := addEvents(t, db, "orders", 1, 3) // key-000 seq 1..3
	var l []outbox.Event
	for range 2 {
		evs, err := outbox.Add(ctx, db, outbox.Event{Topic: "orders", Key: "other", Type: "x", Payload: []byte(`{}`)})
		require.NoError(t, err)
		l = append(l, evs...)
	}
	log := &publishLog{}
	r, err := outbox.NewRelay(db, log)
	require.NoError(t, err)

	other, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	require.NoError(t, err)
	var pos int64
	require.NoError(t, other.NewSelect().Table(outbox.TableEvents).Column("pos").
		Where("id = ?", k[0].ID).For("UPDATE").Scan(ctx, &pos), "another relay holds key-000's head")

	n, err := r.RelayOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, ids(l), ids(log.snapshot()), "key-000 seq 2 and 3 wait for seq 1")

	require.NoError(t, other.Rollback()) // the other relay died without publishing
	relayUntilDone(t, r, db)
	assert.Equal(t, append(ids(l), ids(k)...), ids(log.snapshot()))
}

// TestRelayCrashAfterPublishIsADuplicateNotALoss: a relay that dies after publishing a batch
// and before marking it sent publishes it again when it restarts, with the same event IDs;
// the consumer applies every event exactly once.
func TestRelayCrashAfterPublishIsADuplicateNotALoss(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		m := newMetrics()
		c, err := outbox.NewConsumer(db, "projector", outboxtest.RecordingHandler("projector"), outbox.WithObserver(m))
		require.NoError(t, err)
		d, err := outbox.NewDispatcher(outbox.Subscription{Topic: "orders", Consumer: c})
		require.NoError(t, err)
		want := addEvents(t, db, "orders", 3, 20)

		var published []string
		crashing, err := outbox.NewRelay(db, outbox.PublisherFunc(func(ctx context.Context, events []outbox.Event) error {
			published = append(published, ids(events)...)
			if err := d.Publish(ctx, events); err != nil {
				return err
			}
			return errors.New("killed after publishing, before marking")
		}), outbox.WithBatchSize(10))
		require.NoError(t, err)
		for range 2 {
			_, err := crashing.RelayOnce(ctx)
			require.Error(t, err)
		}
		assert.Equal(t, len(want), outboxtest.Unsent(t, db), "nothing was marked sent")

		restarted, err := outbox.NewRelay(db, outbox.PublisherFunc(func(ctx context.Context, events []outbox.Event) error {
			published = append(published, ids(events)...)
			return d.Publish(ctx, events)
		}), outbox.WithBatchSize(10))
		require.NoError(t, err)
		relayUntilDone(t, restarted, db)

		assert.Equal(t, len(want)+20, len(published), "the first batch went out three times: duplicates with the same IDs")
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "projector"), want)
		assert.Equal(t, 20, m.get("duplicate", "projector/orders"), "the two re-deliveries were skipped as duplicates")
	})
}

// TestRelayCutsAStreamAtItsFirstFailure: when the publisher rejects one event, the relay
// marks sent what came before it in that stream and everything of other streams, and
// publishes the rest of the stream later, in order.
func TestRelayCutsAStreamAtItsFirstFailure(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		evs := addEvents(t, db, "orders", 2, 4) // key-000 and key-001, seq 1..4, interleaved
		reject := evs[2].ID                     // key-000 seq 2
		log := &publishLog{}
		m := newMetrics()
		first := true
		r, err := outbox.NewRelay(db, outbox.PublisherFunc(func(ctx context.Context, events []outbox.Event) error {
			require.NoError(t, log.Publish(ctx, events))
			if first {
				first = false
				return &outbox.PublishError{Failed: map[string]error{reject: errors.New("not leader")}}
			}
			return nil
		}), outbox.WithObserver(m))
		require.NoError(t, err)
		n, err := r.RelayOnce(ctx)
		require.ErrorIs(t, err, outbox.ErrPublish)
		assert.Equal(t, 5, n, "key-000 seq 1 and key-001 seq 1..4")
		assert.Equal(t, 3, outboxtest.Unsent(t, db))
		assert.Equal(t, 3, m.get("publish_failed", "orders"), "the rejected event and the two after it in its stream")
		relayUntilDone(t, r, db)
		var k0 []int64
		for _, ev := range log.snapshot()[len(evs):] {
			k0 = append(k0, ev.Seq)
		}
		assert.Equal(t, []int64{2, 3, 4}, k0, "the second round republishes key-000 from seq 2 on")
		assert.Equal(t, 8, m.get("published", "orders"))
	})
}

// TestTwoRelaysPublishEachEventOnce: two relays running at once, while writers add events,
// publish every event exactly once, and each stream in order.
func TestTwoRelaysPublishEachEventOnce(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	ctx, cancel := context.WithCancel(context.Background())
	log := &publishLog{}
	var wg sync.WaitGroup
	for range 2 {
		r, err := outbox.NewRelay(db, log, outbox.WithBatchSize(50), outbox.WithInterval(5*time.Millisecond))
		require.NoError(t, err)
		wg.Go(func() { assert.NoError(t, r.Run(ctx)) })
	}
	const writers, keys, perKey = 4, 20, 30
	var mu sync.Mutex
	var written []outbox.Event
	var ww sync.WaitGroup
	for w := range writers {
		ww.Go(func() {
			for i := range keys * perKey / writers {
				evs, err := outbox.Add(ctx, db, outbox.Event{
					Topic: "orders", Key: fmt.Sprintf("key-%02d", (w*7+i)%keys), Type: "x", Payload: []byte(`{}`),
				})
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				written = append(written, evs...)
				mu.Unlock()
			}
		})
	}
	ww.Wait()
	require.Eventually(t, outboxtest.Drained(db), 2*time.Minute, 10*time.Millisecond, "both relays to drain the outbox")
	cancel()
	wg.Wait()

	got := log.snapshot()
	count := make(map[string]int)
	last := make(map[string]int64)
	for _, ev := range got {
		count[ev.ID]++
		require.Equal(t, last[ev.Key]+1, ev.Seq, "key %s published out of order", ev.Key)
		last[ev.Key] = ev.Seq
	}
	require.Len(t, written, keys*perKey)
	for _, ev := range written {
		require.Equal(t, 1, count[ev.ID], "event %s published %d times", ev.ID, count[ev.ID])
	}
	assert.Len(t, got, len(written))
}

// TestRelayRunBacksOffAndResumes: with the publisher failing, Run keeps every event unsent
// and retries with backoff; when the publisher recovers it delivers everything in order.
func TestRelayRunBacksOffAndResumes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		log := &publishLog{}
		m := newMetrics()
		var mu sync.Mutex
		down := true
		r, err := outbox.NewRelay(db, outbox.PublisherFunc(func(ctx context.Context, events []outbox.Event) error {
			mu.Lock()
			defer mu.Unlock()
			if down {
				return errors.New("broker unreachable")
			}
			return log.Publish(ctx, events)
		}), outbox.WithObserver(m), outbox.WithBatchSize(10), outbox.WithBackoff(time.Millisecond, 20*time.Millisecond), outbox.WithInterval(5*time.Millisecond))
		require.NoError(t, err)
		want := addEvents(t, db, "orders", 4, 10)
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()
		require.Eventually(t, func() bool { return m.get("publish_failed", "orders") >= 30 }, 2*time.Minute, 10*time.Millisecond, "failed rounds")
		assert.Equal(t, len(want), outboxtest.Unsent(t, db))
		mu.Lock()
		down = false
		mu.Unlock()
		require.Eventually(t, outboxtest.Drained(db), 2*time.Minute, 10*time.Millisecond, "the relay to drain the outbox")
		cancel()
		require.NoError(t, <-done)
		assert.Equal(t, ids(want), ids(log.snapshot()))
	})
}

// TestRelayReportsLag: the lag is the age of the oldest unsent event, 0 once all are sent.
func TestRelayReportsLag(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		clk := newClock()
		m := newMetrics()
		w, err := outbox.NewWriter(outbox.WithClock(clk.Now))
		require.NoError(t, err)
		_, err = w.Add(ctx, db, outbox.Event{Topic: "orders", Key: "a", Type: "x", Payload: []byte(`{}`)})
		require.NoError(t, err)
		clk.Advance(90 * time.Second)
		failing := true
		r, err := outbox.NewRelay(db, outbox.PublisherFunc(func(context.Context, []outbox.Event) error {
			if failing {
				return errors.New("down")
			}
			return nil
		}), outbox.WithClock(clk.Now), outbox.WithObserver(m))
		require.NoError(t, err)
		lag, err := r.Lag(ctx)
		require.NoError(t, err)
		assert.Equal(t, 90*time.Second, lag)
		_, err = r.RelayOnce(ctx)
		require.Error(t, err)
		failing = false
		_, err = r.RelayOnce(ctx)
		require.NoError(t, err)
		assert.Equal(t, []time.Duration{90 * time.Second, 0}, m.lags())
		assert.Equal(t, 1, m.get("publish_failed", "orders"))
		assert.Equal(t, 1, m.get("published", "orders"))
	})
}

func TestRunLoopsStopWhenCancelled(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.SQLite(t))
	r, err := outbox.NewRelay(db, &publishLog{})
	require.NoError(t, err)
	c, err := outbox.NewCleaner(db)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	waitRelay, waitConsumer := runUntil(t, ctx, r.Run), runUntil(t, ctx, c.Run)
	cancel()
	waitRelay()
	waitConsumer()
}

func TestConstructorsRejectBadConfiguration(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.SQLite(t))
	_, err := outbox.NewRelay(nil, &publishLog{})
	assert.ErrorIs(t, err, outbox.ErrInvalidConfig)
	_, err = outbox.NewRelay(db, &publishLog{}, outbox.WithBatchSize(0))
	assert.ErrorIs(t, err, outbox.ErrInvalidConfig)
	_, err = outbox.NewConsumer(db, "", outboxtest.RecordingHandler("x"))
	assert.ErrorIs(t, err, outbox.ErrInvalidConfig)
	_, err = outbox.NewConsumer(db, "x", nil)
	assert.ErrorIs(t, err, outbox.ErrInvalidConfig)
	_, err = outbox.NewCleaner(db, outbox.WithRetention(0))
	assert.ErrorIs(t, err, outbox.ErrInvalidConfig)
	c, err := outbox.NewConsumer(db, "x", outboxtest.RecordingHandler("x"))
	require.NoError(t, err)
	_, err = outbox.NewDispatcher(outbox.Subscription{Topic: "a", Consumer: c}, outbox.Subscription{Topic: "a", Consumer: c})
	assert.ErrorIs(t, err, outbox.ErrInvalidConfig)
	_, err = outbox.NewDispatcher(outbox.Subscription{Topic: "bad topic", Consumer: c})
	assert.ErrorIs(t, err, outbox.ErrInvalidConfig)
}

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

// TestRunCancelledWhileTheBrokerCommitsMarksWhatItPublished: the shutdown comes while the
// publisher waits for the broker, and the publisher gives up waiting as soon as its context
// ends (saramaoutbox does: its Kafka transaction then commits in the background). The
// relay must give it the time Run promises (finishTimeout past the cancellation) to learn
// that the broker took the batch, and mark it sent: else the restarted relay publishes it
// again.
func TestRunCancelledWhileTheBrokerCommitsMarksWhatItPublished(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		want := addEvents(t, db, "orders", 2, 3)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		log := &publishLog{}
		var broker sync.WaitGroup
		r, err := outbox.NewRelay(db, outbox.PublisherFunc(func(pctx context.Context, events []outbox.Event) error {
			cancel() // SIGTERM while the broker takes the batch
			committed := make(chan error, 1)
			broker.Go(func() { committed <- log.Publish(context.Background(), events) }) // the broker commits whatever happens
			if pctx.Err() != nil {
				return pctx.Err() // the caller is gone: nobody waits for the broker's answer
			}
			select {
			case err := <-committed:
				return err
			case <-pctx.Done():
				return pctx.Err()
			}
		}))
		require.NoError(t, err)
		runUntil(t, ctx, r.Run)()
		broker.Wait()
		assert.Equal(t, ids(want), ids(log.snapshot()))
		assert.Zero(t, outboxtest.Unsent(t, db), "what the broker took is marked sent")
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
