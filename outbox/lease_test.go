package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

// The leases' tests below were first written by a session attacking the leases' first
// design (a count per event, given back by decrement), each failing against it.

// dieUnder makes n deliveries of ev by consumer name on db (with opts) that die under the
// handler (runtime.Goexit: nothing after the handler runs, as when the process dies), as
// a poison event's would: each leaves its lease.
func dieUnder(t *testing.T, db *bun.DB, name string, ev outbox.Event, n int, opts ...outbox.Option) {
	t.Helper()
	c, err := outbox.NewConsumer(db, name, func(context.Context, bun.Tx, []outbox.Event) error {
		runtime.Goexit()
		return nil
	}, opts...)
	require.NoError(t, err)
	for range n {
		done := make(chan bool)
		go func() {
			returned := false
			defer func() { done <- returned }()
			_ = c.Deliver(context.Background(), []outbox.Event{ev})
			returned = true
		}()
		require.False(t, <-done, "the delivery returned: it did not die under the handler")
	}
}

// leasesOf returns how many leases consumer name holds on db.
func leasesOf(t *testing.T, db *bun.DB, name string) int {
	t.Helper()
	n, err := db.NewSelect().Table(outbox.TableInflight).Where("consumer = ?", name).Count(context.Background())
	require.NoError(t, err)
	return int(n)
}

// TestConsumerPoisonEventCrashingTheDatabaseDeliveredWhileDown: an event under whose
// handling the database server dies at every delivery, delivered again while the server
// is still down (as the relay, the Dispatcher and saramaoutbox do: they retry), is
// dead-lettered after 3 crashes. The delivery while down cannot lease the events; what it
// owes back for that must be exactly its own leases (none), not one of the crashes.
func TestConsumerPoisonEventCrashingTheDatabaseDeliveredWhileDown(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db, linked, link := testenv.LinkedMySQLAt(t, dsn)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	const name = "retried-while-down"
	events := fakeEvents(3, 1)
	marked := events[1].ID
	c, err := outbox.NewConsumer(linked, name, markingHandler(name, marked, nil), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond))
	require.NoError(t, err)
	crashes := deliverCrashing(t, c, link, server, events, func(int) bool { return true }, func() {
		err := c.Deliver(ctx, events) // the caller's retry, the server still down
		require.True(t, err != nil && depfail.Is(err), "delivery while down: %v", err)
	})
	assert.Equal(t, 3, crashes)
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), []outbox.Event{events[0], events[2]})
	letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
	require.NoError(t, err)
	require.Len(t, letters, 1)
	assert.Equal(t, marked, letters[0].Event.ID)
	assert.Zero(t, leasesOf(t, db, name))
}

// TestConsumerCancelledDeliveryOwesNoCrash: an event the process died under at 3
// deliveries, delivered first with a context already done (a rebalance ending the
// session, a shutdown), whose lease is never sent, is still dead-lettered unhandled at
// the next delivery: the cancelled one gives back nothing but its own.
func TestConsumerCancelledDeliveryOwesNoCrash(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		const name = "cancelled"
		ev := fakeEvents(1, 1)[0]
		dieUnder(t, db, name, ev, 3)
		handled := 0
		c, err := outbox.NewConsumer(db, name, func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
			handled++
			return outboxtest.Record(ctx, tx, name, evs)
		})
		require.NoError(t, err)
		done, cancel := context.WithCancel(ctx)
		cancel()
		require.ErrorIs(t, c.Deliver(done, []outbox.Event{ev}), context.Canceled)
		require.NoError(t, c.Deliver(ctx, []outbox.Event{ev}))
		assert.Zero(t, handled, "handled after 3 deliveries died under it")
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
		require.NoError(t, err)
		require.Len(t, letters, 1)
		assert.Equal(t, 3, letters[0].Attempts)
		assert.Zero(t, leasesOf(t, db, name))
	})
}

// TestConsumerDeadLetterKeepsNoLease: an event dead-lettered for the 3 deliveries that died
// under it, whose leases cannot be removed (the connection cut at that DELETE), fails the
// delivery; the next one dead-letters it again (one letter) and removes them. Once the
// cause is fixed, Redrive applies it: handled once, no letter, no lease.
func TestConsumerDeadLetterKeepsNoLease(t *testing.T) {
	db, linked, link := testenv.LinkedMySQL(t)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	const name = "forget-cut"
	ev := fakeEvents(1, 1)[0]
	dieUnder(t, db, name, ev, 3)
	handled := 0
	record := outboxtest.RecordingHandler(name)
	c, err := outbox.NewConsumer(linked, name, func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
		handled++
		return record(ctx, tx, evs)
	})
	require.NoError(t, err)
	link.Arm(func(q string) bool { return strings.HasPrefix(q, "DELETE FROM `outbox_inflight`") }, false)
	err = c.Deliver(ctx, []outbox.Event{ev})
	cut, _ := link.Disarm()
	require.Len(t, cut, 1)
	require.True(t, err != nil && depfail.Is(err), "%v", err)
	assert.Equal(t, 3, leasesOf(t, db, name))
	require.NoError(t, c.Deliver(ctx, []outbox.Event{ev}))
	assert.Zero(t, leasesOf(t, db, name))
	letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
	require.NoError(t, err)
	require.Len(t, letters, 1)
	assert.Zero(t, handled)

	applied, err := c.Redrive(ctx, 0)
	require.NoError(t, err)
	assert.Equal(t, 1, applied)
	assert.Equal(t, 1, handled)
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), []outbox.Event{ev})
	letters, err = outbox.NewDeadLetterTable(db).List(ctx, name, 0)
	require.NoError(t, err)
	assert.Empty(t, letters)
	assert.Zero(t, leasesOf(t, db, name))
}

// TestConsumerConcurrentDeliveriesOfSuspectedEvents: 8 concurrent Deliver calls on one
// Consumer (SQLite: one connection), every third event with 2 deliveries that died under
// it (handled alone), some repeating another call's events, end, apply every event
// exactly once, dead-letter nothing and leave no lease.
func TestConsumerConcurrentDeliveriesOfSuspectedEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		const name = "concurrent"
		events := fakeEvents(32, 8)
		for i := 0; i < len(events); i += 3 {
			dieUnder(t, db, name, events[i], 2)
		}
		c, err := outbox.NewConsumer(db, name, outboxtest.RecordingHandler(name), outbox.WithBatchSize(3), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond))
		require.NoError(t, err)
		errs := make(chan error, 8)
		for g := range 8 {
			go func() {
				var mine []outbox.Event
				for k := range 4 {
					mine = append(mine, events[k*8+g])
				}
				if g%2 == 0 {
					mine = append(mine, events[(g+1)%8])
				}
				errs <- c.Deliver(ctx, mine)
			}()
		}
		for range 8 {
			require.NoError(t, <-errs)
		}
		require.Len(t, outboxtest.Applied(t, db, name), len(events))
		letters, err := outbox.NewDeadLetterTable(db).List(context.Background(), name, 0)
		require.NoError(t, err)
		assert.Empty(t, letters)
		assert.Zero(t, leasesOf(t, db, name))
	})
}

// The consumer process of TestConsumerKilledBeforeHandlingCountsNoCrash.
const (
	windowDSN   = "OUTBOX_WINDOW_DSN"
	windowEvent = "OUTBOX_WINDOW_EVENT"
	windowAt    = "OUTBOX_WINDOW_AT"   // "handler": blocks in the handler; "read": once it has read the event's leases
	windowMark  = "OUTBOX_WINDOW_MARK" // a file written once blocked
)

// TestConsumerKilledBeforeHandlingCountsNoCrash: a consumer process killed (SIGKILL) once
// while a healthy event is handled leaves it suspected; killed twice more while that
// event's delivery has read its leases and not yet taken its own, it is not counted
// again: the next process handles it (alone) and applies it, nothing dead-lettered.
func TestConsumerKilledBeforeHandlingCountsNoCrash(t *testing.T) {
	if os.Getenv(windowDSN) != "" {
		runWindowConsumer(t)
		return
	}
	dsn := testenv.MySQLDSN(t)
	db := openKiller(t, "mysql", dsn)
	outboxtest.Prepare(t, db)
	ev := fakeEvents(1, 1)[0]
	blob, err := json.Marshal(ev)
	require.NoError(t, err)
	dir := t.TempDir()
	for run, at := range []string{"handler", "read", "read"} {
		mark := filepath.Join(dir, "mark"+string(rune('0'+run)))
		cmd := exec.Command(os.Args[0], "-test.run=^TestConsumerKilledBeforeHandlingCountsNoCrash$", "-test.count=1")
		cmd.Env = append(os.Environ(), windowDSN+"="+dsn, windowEvent+"="+string(blob), windowAt+"="+at, windowMark+"="+mark)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		require.NoError(t, cmd.Start())
		for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(mark); err == nil {
				break
			}
			require.Less(t, time.Since(start), 30*time.Second, "the consumer process never blocked at %s:\n%s", at, out.String())
		}
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait()
		assert.Equal(t, 1, leasesOf(t, db, "window"), "run %d, killed at %s", run, at)
	}
	handled := 0
	record := outboxtest.RecordingHandler("window")
	c, err := outbox.NewConsumer(db, "window", func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
		handled++
		return record(ctx, tx, evs)
	})
	require.NoError(t, err)
	require.NoError(t, c.Deliver(context.Background(), []outbox.Event{ev}))
	letters, err := outbox.NewDeadLetterTable(db).List(context.Background(), "window", 0)
	require.NoError(t, err)
	assert.Empty(t, letters)
	assert.Equal(t, 1, handled)
	assert.Zero(t, leasesOf(t, db, "window"))
}

// blockAfterRead blocks the process for good once it has read the leases of event id,
// after writing the file mark.
type blockAfterRead struct{ id, mark string }

func (h *blockAfterRead) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	return ctx
}

func (h *blockAfterRead) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	if strings.HasPrefix(e.Query, "SELECT") && strings.Contains(e.Query, "`outbox_inflight`") && strings.Contains(e.Query, h.id) {
		_ = os.WriteFile(h.mark, []byte("read"), 0o600)
		select {}
	}
}

func runWindowConsumer(t *testing.T) {
	var ev outbox.Event
	require.NoError(t, json.Unmarshal([]byte(os.Getenv(windowEvent)), &ev))
	db := openKiller(t, "mysql", os.Getenv(windowDSN))
	mark := os.Getenv(windowMark)
	if os.Getenv(windowAt) == "read" {
		db = db.WithQueryHook(&blockAfterRead{id: ev.ID, mark: mark})
	}
	c, err := outbox.NewConsumer(db, "window", func(context.Context, bun.Tx, []outbox.Event) error {
		_ = os.WriteFile(mark, []byte("handling"), 0o600)
		select {}
	})
	require.NoError(t, err)
	_ = c.Deliver(context.Background(), []outbox.Event{ev})
}

// TestConsumerReportsLeasesAndSuspects: the Observer sees each leased event and, at each
// delivery, each event whose earlier deliveries died under its handling, so an operator
// sees a poison event isolated before it is dead-lettered.
func TestConsumerReportsLeasesAndSuspects(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		events := fakeEvents(3, 3)
		m := newMetrics()
		dieUnder(t, db, "c", events[1], 2, outbox.WithObserver(m))
		assert.Equal(t, 2, m.get("leased", "c/orders"), "each dying delivery leased its event")
		assert.Equal(t, 1, m.get("suspected", "c/orders"), "the second delivery found the first's lease")

		m = newMetrics()
		c, err := outbox.NewConsumer(db, "c", outboxtest.RecordingHandler("c"), outbox.WithObserver(m))
		require.NoError(t, err)
		require.NoError(t, c.Deliver(ctx, events))
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "c"), events)
		assert.Equal(t, 1, m.get("suspected", "c/orders"), "the event two deliveries died under")
		assert.Equal(t, 3, m.get("leased", "c/orders"), "one by one, each leased")
		assert.Equal(t, 3, m.get("applied", "c/orders"))
		assert.Zero(t, leasesOf(t, db, "c"))

		require.NoError(t, c.Deliver(ctx, events))
		assert.Equal(t, 1, m.get("suspected", "c/orders"), "nothing left to suspect")
	})
}

// TestConsumerLeasesOnlyInItsWindow: a Consumer leases (reads its events' leases, commits
// its own) for the lease window after its first delivery and after a failed handler
// transaction, and otherwise sends exactly the statements it would without leases; with
// AlwaysLease it leases every delivery.
func TestConsumerLeasesOnlyInItsWindow(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		qc := &queryCounter{}
		counted := db.WithQueryHook(qc)
		clk := newClock()
		failing := ""
		record := outboxtest.RecordingHandler("window")
		c, err := outbox.NewConsumer(counted, "window", func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
			for _, ev := range evs {
				if ev.ID == failing {
					failing = ""
					return errors.New("failed once")
				}
			}
			return record(ctx, tx, evs)
		}, outbox.WithClock(clk.Now), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond))
		require.NoError(t, err)
		events := fakeEvents(12, 3)
		deliver := func(events []outbox.Event) (leases int) {
			t.Helper()
			qc.reset("SELECT outbox_inflight", "INSERT outbox_inflight")
			require.NoError(t, c.Deliver(ctx, events))
			require.Equal(t, qc.get("SELECT outbox_inflight"), qc.get("INSERT outbox_inflight"), "a lease read for each taken")
			return qc.get("INSERT outbox_inflight")
		}
		assert.Equal(t, 1, deliver(events[0:3]), "the first delivery leases")
		clk.Advance(59 * time.Second)
		assert.Equal(t, 1, deliver(events[3:6]), "within a minute of it")
		clk.Advance(2 * time.Second)
		assert.Zero(t, deliver(events[6:9]), "a minute after it: a healthy stream takes no lease")
		failing = events[10].ID
		assert.Zero(t, deliver(events[9:11]), "the batch failing, and its events one by one, past the window")
		assert.Equal(t, 1, deliver(events[11:12]), "a failure leases again")
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "window"), events)
		assert.Zero(t, leasesOf(t, db, "window"))

		always, err := outbox.NewConsumer(counted, "always", outboxtest.RecordingHandler("always"),
			outbox.WithClock(clk.Now), outbox.WithLeaseWindow(outbox.AlwaysLease))
		require.NoError(t, err)
		qc.reset("INSERT outbox_inflight")
		require.NoError(t, always.Deliver(ctx, events[:3]))
		clk.Advance(24 * 365 * time.Hour)
		require.NoError(t, always.Deliver(ctx, events[3:6]))
		assert.Equal(t, 2, qc.get("INSERT outbox_inflight"))

		_, err = outbox.NewConsumer(db, "bad", outboxtest.RecordingHandler("bad"), outbox.WithLeaseWindow(0))
		require.ErrorIs(t, err, outbox.ErrInvalidConfig)
	})
}

// The tests below were first written by a second session attacking the lease window,
// each failing against it (the window reopened at a failure's time rather than at the
// next delivery; a claim's first deliveries unleased; this Consumer's own delivery under
// way read as a crash; a suspected event's transaction deleting its leases by a range).

// TestConsumerPoisonCrashingTheDatabaseLongPastItsWindow: a Consumer long past its first
// minute meets an event that crashes the database server at every delivery, and its next
// delivery comes each time two minutes after the crash (crash recovery; the relay cannot
// read the outbox meanwhile): the window a failure opens starts at that next delivery,
// and the event is dead-lettered after at most 4 crashes.
func TestConsumerPoisonCrashingTheDatabaseLongPastItsWindow(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db, linked, link := testenv.LinkedMySQLAt(t, dsn)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	const name = "slow-restart"
	clk := newClock()
	events := fakeEvents(3, 1)
	marked := events[1].ID
	c, err := outbox.NewConsumer(linked, name, markingHandler(name, marked, nil), outbox.WithClock(clk.Now), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond))
	require.NoError(t, err)
	warm := fakeEvents(1, 1)
	warm[0].Key = "warm"
	require.NoError(t, c.Deliver(ctx, warm)) // the first delivery, long ago
	clk.Advance(10 * time.Minute)
	crashes := deliverCrashing(t, c, link, server, events, func(int) bool { return true }, func() {
		clk.Advance(2 * time.Minute) // crash recovery; nothing delivers meanwhile
	})
	assert.Equal(t, 4, crashes, "the first, outside the window, is not counted")
	letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
	require.NoError(t, err)
	require.Len(t, letters, 1)
	assert.Equal(t, marked, letters[0].Event.ID)
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), append(warm, events[0], events[2]))
}

// TestConsumerGroupPoisonReachesMembersPastTheirWindows: members of a group, each a process
// the poison event kills, are given its partition 90 s after they restarted and began
// delivering their other partitions, past their windows; the claim of a partition reopens
// the window (LeaseAgain, as saramaoutbox's ConsumeClaim calls it), so the event is
// dead-lettered after at most 4 deaths.
func TestConsumerGroupPoisonReachesMembersPastTheirWindows(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		const name = "group"
		clk := newClock()
		evs := fakeEvents(12, 12)
		poison := evs[0]
		handledPoison := 0
		handler := func(ctx context.Context, tx bun.Tx, es []outbox.Event) error {
			for _, ev := range es {
				if ev.ID == poison.ID {
					handledPoison++
					runtime.Goexit() // the process dies
				}
			}
			return outboxtest.Record(ctx, tx, name, es)
		}
		for restart := 1; restart <= 6; restart++ {
			c, err := outbox.NewConsumer(db, name, handler, outbox.WithClock(clk.Now))
			require.NoError(t, err)
			require.NoError(t, c.Deliver(ctx, []outbox.Event{evs[restart]})) // its other partitions
			clk.Advance(90 * time.Second)                                    // the other member's session expiring
			c.LeaseAgain()                                                   // the poison event's partition claimed
			done := make(chan bool)
			go func() {
				returned := false
				defer func() { done <- returned }()
				_ = c.Deliver(ctx, []outbox.Event{poison})
				returned = true
			}()
			if <-done { // returned: dead-lettered
				break
			}
		}
		assert.Equal(t, 3, handledPoison, "deaths under the poison event")
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
		require.NoError(t, err)
		require.Len(t, letters, 1)
		assert.Equal(t, poison.ID, letters[0].Event.ID)
		assert.Zero(t, leasesOf(t, db, name))
	})
}

// TestConsumerOwnDeliveryUnderWayIsNoCrash: an event with 2 deliveries that died under it,
// handled alone by one Deliver call, is delivered by another call of the same Consumer
// meanwhile: the first call's lease is no third crash, and the event is applied once and
// never dead-lettered.
func TestConsumerOwnDeliveryUnderWayIsNoCrash(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	ctx := context.Background()
	const name = "inflight"
	ev := fakeEvents(1, 1)[0]
	dieUnder(t, db, name, ev, 2)
	entered, proceed := make(chan struct{}, 1), make(chan struct{})
	waitingAlone := make(chan struct{}, 16) // the Consumer logged waiting to handle it alone
	record := outboxtest.RecordingHandler(name)
	c, err := outbox.NewConsumer(db, name, func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
		select {
		case entered <- struct{}{}:
			<-proceed
		default:
		}
		return record(ctx, tx, evs)
	}, outbox.WithLogger(slog.New(&signalingHandler{match: "to handle a suspected event alone", ch: waitingAlone})))
	require.NoError(t, err)
	first := make(chan error, 1)
	go func() { first <- c.Deliver(ctx, []outbox.Event{ev}) }()
	<-entered // handled alone, its lease committed
	second := make(chan error, 1)
	go func() { second <- c.Deliver(ctx, []outbox.Event{ev}) }()
	<-waitingAlone // the second read the leases, and waits to handle it alone
	close(proceed)
	require.NoError(t, <-first)
	require.NoError(t, <-second)
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), []outbox.Event{ev})
	letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
	require.NoError(t, err)
	assert.Empty(t, letters)
	assert.Zero(t, leasesOf(t, db, name))
}

// TestConsumerAloneDeliveryHoldsNoOtherMemberBack: member B of a group (two Consumers of
// one name: two processes) handles a suspected event alone; its transaction removes the
// event's leases by whole primary keys, so member A leases and applies an event of another
// stream (a later ID) while B's handler is still running, rather than waiting on B's gap
// lock until its lock wait times out.
func TestConsumerAloneDeliveryHoldsNoOtherMemberBack(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	ctx := context.Background()
	const name = "group"
	evs := fakeEvents(2, 2) // two streams; evs[1]'s ID sorts after evs[0]'s
	suspected, healthy := evs[0], evs[1]
	dieUnder(t, db, name, suspected, 1)
	entered, proceed := make(chan struct{}), make(chan struct{})
	b, err := outbox.NewConsumer(db, name, func(ctx context.Context, tx bun.Tx, es []outbox.Event) error {
		close(entered)
		<-proceed
		return outboxtest.Record(ctx, tx, name, es)
	})
	require.NoError(t, err)
	a, err := outbox.NewConsumer(db, name, outboxtest.RecordingHandler(name))
	require.NoError(t, err)
	bDone := make(chan error, 1)
	go func() { bDone <- b.Deliver(ctx, []outbox.Event{suspected}) }()
	<-entered
	require.NoError(t, a.Deliver(ctx, []outbox.Event{healthy}), "member A, while B handles its suspected event")
	close(proceed)
	require.NoError(t, <-bDone)
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), evs)
	assert.Zero(t, leasesOf(t, db, name))
}

// TestConsumerAppliedEventIsNeverDeadLetteredForOldLeases: an event 3 deliveries died
// under, then applied by a member past its window (no lease read or removed), is
// delivered again (a duplicate after a rebalance) by a Consumer in its window: it is not
// dead-lettered, not applied twice, and its leases go.
func TestConsumerAppliedEventIsNeverDeadLetteredForOldLeases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		const name = "stale"
		clk := newClock()
		evs := fakeEvents(2, 2)
		dieUnder(t, db, name, evs[0], 3, outbox.WithClock(clk.Now))
		b, err := outbox.NewConsumer(db, name, outboxtest.RecordingHandler(name), outbox.WithClock(clk.Now))
		require.NoError(t, err)
		require.NoError(t, b.Deliver(ctx, evs[1:2])) // B's first delivery, long ago
		clk.Advance(10 * time.Minute)
		require.NoError(t, b.Deliver(ctx, evs[0:1])) // B gets the event's partition, past its window
		assert.Equal(t, 3, leasesOf(t, db, name))
		fresh, err := outbox.NewConsumer(db, name, outboxtest.RecordingHandler(name), outbox.WithClock(clk.Now))
		require.NoError(t, err)
		require.NoError(t, fresh.Deliver(ctx, evs[0:1]))
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), []outbox.Event{evs[1], evs[0]})
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
		require.NoError(t, err)
		assert.Empty(t, letters)
		assert.Zero(t, leasesOf(t, db, name))
	})
}

// TestConsumerLeasesHostileIDs: events whose IDs are at the 64-byte bound in multi-byte
// characters, carry SQL's quotes and wildcards, or repeat within the batch, delivered in
// the lease window (their leases read, taken and removed) and once more after a delivery
// died under them (handled alone), are applied exactly once and leave no lease.
func TestConsumerLeasesHostileIDs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		const name = "hostile"
		events := fakeEvents(3, 3)
		events[0].ID = strings.Repeat("é", 32) // 64 bytes
		events[1].ID = `a'; DELETE FROM outbox_inflight; --`
		events[2].ID = `%_\'"`
		dieUnder(t, db, name, events[1], 1)
		c, err := outbox.NewConsumer(db, name, outboxtest.RecordingHandler(name))
		require.NoError(t, err)
		require.NoError(t, c.Deliver(ctx, append(events, events[0], events[2])))
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), events)
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
		require.NoError(t, err)
		assert.Empty(t, letters)
		assert.Zero(t, leasesOf(t, db, name))
	})
}
