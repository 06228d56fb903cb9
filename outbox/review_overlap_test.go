package outbox_test

import (
	"context"
	"fmt"
	"strings"
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

// commitGate is a query hook on the relay's own bun.DB: it holds the relay's first COMMIT
// (the round Run lets commit while the next one picks and publishes) until released, and
// counts the stream-head queries, one per round that found rows.
type commitGate struct {
	once    sync.Once
	mu      sync.Mutex
	commits int
	heads   int
	reached chan struct{}
	release chan struct{}
}

func newCommitGate() *commitGate {
	return &commitGate{reached: make(chan struct{}), release: make(chan struct{})}
}

func (g *commitGate) BeforeQuery(ctx context.Context, ev *bun.QueryEvent) context.Context {
	if ev.Query == "COMMIT" {
		g.mu.Lock()
		g.commits++
		first := g.commits == 1
		g.mu.Unlock()
		if first {
			close(g.reached)
			<-g.release
		}
	}
	return ctx
}

func (g *commitGate) AfterQuery(_ context.Context, ev *bun.QueryEvent) {
	if strings.Contains(ev.Query, "pos NOT IN") {
		g.mu.Lock()
		g.heads++
		g.mu.Unlock()
	}
}

// open releases the held COMMIT (if any comes) for good.
func (g *commitGate) open() { g.once.Do(func() { close(g.release) }) }

func (g *commitGate) headQueries() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.heads
}

// quick are the options of the relays under test: small batches, so that Run overlaps
// rounds, and short pauses.
func quick(batch int) []outbox.Option {
	return []outbox.Option{outbox.WithBatchSize(batch), outbox.WithInterval(5 * time.Millisecond),
		outbox.WithBackoff(time.Millisecond, 10*time.Millisecond)}
}

// gatedRelay starts Run of a relay on db (through a commitGate) publishing to pub, and
// returns the gate, Run's cancel and a function that waits for Run to return.
func gatedRelay(t testing.TB, db *bun.DB, pub outbox.Publisher, opts ...outbox.Option) (*outbox.Relay, *commitGate, context.CancelFunc, func()) {
	g := newCommitGate()
	r, err := outbox.NewRelay(db.WithQueryHook(g), pub, opts...)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	t.Cleanup(g.open) // a failed test must not leave the database locked for its cleanup
	return r, g, cancel, runUntil(t, ctx, r)
}

// killRoundOne kills round 1's connection at its COMMIT, once round 2 published (the
// publisher's second call), and waits for the outbox to drain.
func killRoundOne(t testing.TB, db *bun.DB, g *commitGate, calls <-chan int) {
	<-g.reached
	waitCall(t, calls, 2)
	killOwnTx(t, db)
	g.open()
	require.Eventually(t, outboxtest.Drained(db), 2*time.Minute, 10*time.Millisecond, "the outbox to drain")
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

// waitCall waits until the publisher returned from its n-th call.
func waitCall(t testing.TB, calls <-chan int, n int) {
	t.Helper()
	for {
		select {
		case got := <-calls:
			if got >= n {
				return
			}
		case <-time.After(time.Minute):
			t.Fatalf("publish call %d never came", n)
		}
	}
}

// runUntil runs r.Run(ctx) in the background and returns a function waiting for it.
func runUntil(t testing.TB, ctx context.Context, r *outbox.Relay) func() {
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
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

// killOwnTx kills the connection of the transaction in the test's database that has
// modified rows: the round held at its COMMIT (the next round only locked rows so far; a
// second relay's round marking at the same moment is waited out).
func killOwnTx(t testing.TB, db *bun.DB) {
	t.Helper()
	ctx := context.Background()
	var threads []int64
	require.Eventually(t, func() bool {
		threads = threads[:0]
		require.NoError(t, db.NewRaw(`SELECT t.trx_mysql_thread_id FROM information_schema.innodb_trx t
			JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id
			WHERE p.db = DATABASE() AND t.trx_rows_modified > 0`).Scan(ctx, &threads))
		return len(threads) == 1
	}, 2*time.Minute, 10*time.Millisecond, "one transaction with marked rows")
	_, err := db.ExecContext(ctx, fmt.Sprintf("KILL %d", threads[0]))
	require.NoError(t, err)
}

// TestOverlappingRoundCommitKilled: Run commits round 1 while round 2 publishes the next
// events of the same keys, treating round 1's as out; round 1's connection dies at its
// COMMIT. Round 1's events are published again (the same IDs, after round 2's), no event
// is lost, per key the first copies come in order and the consumer applies each event
// exactly once in order.
func TestOverlappingRoundCommitKilled(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	want := interleaved(t, db, []string{"a", "b"}, 8)
	log, pub, calls := embedded(t, db)
	_, g, cancel, wait := gatedRelay(t, db, pub, quick(4)...)
	killRoundOne(t, db, g, calls)
	cancel()
	wait()

	dups := outboxtest.RequireArrived(t, log.snapshot(), want)
	assert.Equal(t, 4, dups, "round 1's four events went out again")
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "projector"), want)
}

// TestOverlappingRoundCommitFailsWithAnotherRelay: as above, with a second relay running
// on the same database all along, which takes round 1's events once they are free again.
func TestOverlappingRoundCommitFailsWithAnotherRelay(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	want := interleaved(t, db, []string{"a", "b", "c"}, 40)
	log, pub, _ := embedded(t, db)
	_, g, cancel, wait := gatedRelay(t, db, pub, quick(6)...)
	other, err := outbox.NewRelay(db, pub, quick(5)...)
	require.NoError(t, err)
	ctx, cancelOther := context.WithCancel(context.Background())
	defer cancelOther()
	<-g.reached
	// The other relay can publish nothing before the kill (round 1 holds every key's head),
	// but it may lock what round 2 would take, so round 2 may publish nothing either.
	waitOther := runUntil(t, ctx, other)
	require.Eventually(t, func() bool { return g.headQueries() >= 2 }, 2*time.Minute, 10*time.Millisecond, "round 2 to read its stream heads")
	killOwnTx(t, db)
	g.open()
	require.Eventually(t, outboxtest.Drained(db), 2*time.Minute, 10*time.Millisecond, "the outbox to drain")
	cancel()
	cancelOther()
	wait()
	waitOther()

	outboxtest.RequireArrived(t, log.snapshot(), want)
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "projector"), want)
}

// TestOverlappingRoundSetsAsideADeadLetter: round 1 sets a2 aside (refused for good) and
// commits while round 2 runs; round 2 must not publish a3.. (a2 is unsent, in round 1's
// hands, not published), even though a2's dead_at is not committed yet. After Skip, a3..
// follow in order.
func TestOverlappingRoundSetsAsideADeadLetter(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	want := interleaved(t, db, []string{"a", "b"}, 6)
	pub := &refusingPublisher{refuse: map[string]bool{want[2].ID: true}} // a2
	r, g, cancel, wait := gatedRelay(t, db, pub, quick(4)...)
	defer wait()
	defer cancel()

	<-g.reached
	require.Eventually(t, func() bool { return g.headQueries() >= 2 }, 2*time.Minute, 10*time.Millisecond, "round 2 to read its stream heads")
	g.open()
	require.Eventually(t, func() bool { return len(seqsOf(pub.snapshot(), "b")) == 6 }, 2*time.Minute, 10*time.Millisecond, "b to drain")
	assert.Equal(t, []int64{1}, seqsOf(pub.snapshot(), "a"), "nothing of a after the dead letter a2")
	ctx := context.Background()
	dead, err := r.DeadLetters(ctx, 0)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	assert.Equal(t, want[2].ID, dead[0].ID)

	require.NoError(t, r.Skip(ctx, want[2].ID))
	require.Eventually(t, outboxtest.Drained(db), 2*time.Minute, 10*time.Millisecond, "the outbox to drain")
	assert.Equal(t, []int64{1, 3, 4, 5, 6}, seqsOf(pub.snapshot(), "a"))
	assert.Equal(t, []int64{1, 2, 3, 4, 5, 6}, seqsOf(pub.snapshot(), "b"))
}

// TestRunCancelledMidCommitMarksWhatItPublished: Run is cancelled (a graceful shutdown)
// while a round it published is committing and the next one publishes. What the publisher
// accepted is marked sent before Run returns: a restarted relay publishes none of it again.
func TestRunCancelledMidCommitMarksWhatItPublished(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	want := interleaved(t, db, []string{"a", "b"}, 8)
	log, pub, calls := embedded(t, db)
	_, g, cancel, wait := gatedRelay(t, db, pub, outbox.WithBatchSize(4))
	<-g.reached
	waitCall(t, calls, 2)
	cancel()
	g.open()
	wait()

	published := ids(log.snapshot())
	var stillUnsent []string
	require.NoError(t, db.NewSelect().Table(outbox.TableEvents).Column("id").
		Where("sent_at IS NULL AND id IN (?)", bun.List(published)).Scan(context.Background(), &stillUnsent))
	assert.Empty(t, stillUnsent, "of the %d events published before the shutdown, these are still unsent", len(published))

	restarted, err := outbox.NewRelay(db, pub, outbox.WithBatchSize(4))
	require.NoError(t, err)
	relayUntilDone(t, restarted, db)
	outboxtest.RequireArrived(t, log.snapshot(), want)
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "projector"), want)
}

// TestRunCancelledWhilePublishingMarksWhatItPublished: the shutdown comes while the
// publisher is taking a batch, which it then accepts. Run marks that batch sent before it
// returns, on both backends (SQLite never overlaps rounds, but marks after publishing).
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
		runUntil(t, ctx, r)()
		assert.Equal(t, ids(want), ids(log.snapshot()))
		assert.Zero(t, outboxtest.Unsent(t, db), "what the publisher accepted is marked sent")
	})
}

// slowMark delays the relay's marking of sent events, so that a round overlapping the
// previous one's marking would be seen.
type slowMark struct{}

func (slowMark) BeforeQuery(ctx context.Context, ev *bun.QueryEvent) context.Context {
	if strings.HasPrefix(ev.Query, "UPDATE") && strings.Contains(ev.Query, "sent_at =") {
		time.Sleep(20 * time.Millisecond)
	}
	return ctx
}

func (slowMark) AfterQuery(context.Context, *bun.QueryEvent) {}

// TestRunOverlapsRoundsOnlyOnMySQL: on SQLite, Run marks each round before the next one
// picks, however full the batches and slow the marking: whenever the publisher is called,
// everything it was given before is already marked sent. (The same check on MySQL sees
// the overlap.)
func TestRunOverlapsRoundsOnlyOnMySQL(t *testing.T) {
	for _, b := range testenv.Databases() {
		t.Run(b.Name, func(t *testing.T) {
			db := outboxtest.Prepare(t, b.Open(t))
			want := addEvents(t, db, "orders", 3, 10)
			log := &publishLog{}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var overlaps []string
			r, err := outbox.NewRelay(db.WithQueryHook(slowMark{}), outbox.PublisherFunc(func(ctx context.Context, events []outbox.Event) error {
				if before := ids(log.snapshot()); len(before) > 0 {
					var unmarked []string
					require.NoError(t, db.NewSelect().Table(outbox.TableEvents).Column("id").
						Where("sent_at IS NULL AND id IN (?)", bun.List(before)).Scan(ctx, &unmarked))
					overlaps = append(overlaps, unmarked...)
				}
				return log.Publish(ctx, events)
			}), outbox.WithBatchSize(4), outbox.WithInterval(5*time.Millisecond))
			require.NoError(t, err)
			wait := runUntil(t, ctx, r)
			require.Eventually(t, outboxtest.Drained(db), 2*time.Minute, 10*time.Millisecond, "the outbox to drain")
			cancel()
			wait()
			assert.Equal(t, ids(want), ids(log.snapshot()))
			if b.Name == "SQLite" {
				assert.Empty(t, overlaps, "published while an earlier round was still unmarked")
			} else {
				assert.NotEmpty(t, overlaps, "Run overlaps rounds on MySQL")
			}
		})
	}
}

// TestOverlappingRoundPublishFailsWhileTheOtherCommitFails: round 2 (overlapping round 1's
// commit) gets a partial publish failure — b's events refused for now, a's accepted — and
// round 1's commit dies. Nothing is lost, per key the first copies come in order, the
// consumer applies each event once.
func TestOverlappingRoundPublishFailsWhileTheOtherCommitFails(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	want := interleaved(t, db, []string{"a", "b"}, 8)
	log, pub, calls := embedded(t, db)
	var mu sync.Mutex
	call := 0
	flaky := outbox.PublisherFunc(func(ctx context.Context, events []outbox.Event) error {
		mu.Lock()
		call++
		second := call == 2
		mu.Unlock()
		if !second {
			return pub.Publish(ctx, events)
		}
		var ok []outbox.Event
		failed := make(map[string]error)
		for _, ev := range events {
			if ev.Key == "b" {
				failed[ev.ID] = fmt.Errorf("broker busy")
			} else {
				ok = append(ok, ev)
			}
		}
		if err := pub.Publish(ctx, ok); err != nil {
			return err
		}
		return &outbox.PublishError{Failed: failed}
	})
	_, g, cancel, wait := gatedRelay(t, db, flaky, quick(4)...)
	killRoundOne(t, db, g, calls)
	cancel()
	wait()

	outboxtest.RequireArrived(t, log.snapshot(), want)
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "projector"), want)
}

// TestEmbeddedRunWithTwoConnections: the embedded mode with the pool at the documented
// minimum of two connections, full batches (so Run overlaps rounds) and the consumer
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
	wait := runUntil(t, ctx, r)
	require.Eventually(t, outboxtest.Drained(db), 2*time.Minute, 10*time.Millisecond, "the outbox to drain")
	cancel()
	wait()
	assert.Zero(t, outboxtest.RequireArrived(t, log.snapshot(), want))
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "projector"), want)
}
