package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"

	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

// TestConsumerPoisonEventCrashingTheDatabaseAfterAnotherFailure: an event under whose
// handling the whole database goes down at every delivery is dead-lettered after 3 of
// them, as Deliver documents, even when, within each delivery, its handling first fails
// in another way before the crash: its connection lost while the database still answers
// (a poison statement killing one node of a cluster behind a proxy, the next answering,
// the next crashing too), or a handler error. Neither is its handling succeeding, and
// neither may wipe the crashes counted against it: otherwise each delivery counts one
// crash, then forgets it at the next, and the event crashes the database for ever.
func TestConsumerPoisonEventCrashingTheDatabaseAfterAnotherFailure(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db, linked, link := testenv.LinkedMySQLAt(t, dsn)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	for _, first := range []string{"lost", "error"} {
		t.Run(first, func(t *testing.T) {
			name := "crash-after-" + first
			events := fakeEvents(3, 1)
			marked := events[1].ID
			record := outboxtest.RecordingHandler(name)
			handled := 0   // times the marked event's handling began
			failed := true // whether its handling in this delivery already failed the other way
			c, err := outbox.NewConsumer(linked, name, func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
				for _, ev := range evs {
					if ev.ID != marked {
						continue
					}
					handled++
					if !failed {
						failed = true
						if first == "error" {
							return errors.New("the marked event's handler failed")
						}
						var id int64
						if err := tx.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
							return err
						}
						_, err := tx.ExecContext(ctx, fmt.Sprintf("KILL %d", id))
						return err
					}
					if _, err := tx.ExecContext(ctx, markedStatement); err != nil {
						return err
					}
				}
				return record(ctx, tx, evs)
			}, outbox.WithBackoff(time.Millisecond, 2*time.Millisecond))
			require.NoError(t, err)
			crashes := deliverCrashing(t, c, link, server, events, func(int) bool { failed = false; return true }, nil)
			assert.Equal(t, 3, crashes)
			assert.Equal(t, 6, handled, "handled again after its third crash")
			requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), []outbox.Event{events[0], events[2]})
			letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
			require.NoError(t, err)
			require.Len(t, letters, 1)
			assert.Equal(t, marked, letters[0].Event.ID)
			assert.Equal(t, 3, letters[0].Attempts)
		})
	}
}

// TestConsumerCrashUnderAnotherDeliverysEvent: one Consumer delivering several streams at
// once (saramaoutbox's handler runs a claim per partition, all on one Consumer) must not
// count a crash of the database caused by one stream's poison event against a healthy
// event of another stream whose handling happened to be in flight: each crash, after
// restarting the server, meets both handlings again, and the healthy event would be
// dead-lettered at its fourth delivery as surely as the poison one. A crash is the
// suspected event's doing only when nothing else of the Consumer was being handled. End
// state: the healthy event applied exactly once, the poison event dead-lettered after 3
// crashes, and nothing else dead-lettered.
func TestConsumerCrashUnderAnotherDeliverysEvent(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db, linked, link := testenv.LinkedMySQLAt(t, dsn)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	const name = "two-streams"
	evs := fakeEvents(2, 2) // two keys: two streams, as two partitions
	poison, healthy := evs[0], evs[1]
	record := outboxtest.RecordingHandler(name)

	var mu sync.Mutex
	var entered, release chan struct{} // this round's: the healthy handler began; it may go on
	healthyHandled := 0
	waiting := make(chan struct{}, 16) // the Consumer logged waiting for a handling alone, its own or another's
	logger := slog.New(&signalingHandler{match: "outbox consumer: waiting for", ch: waiting})
	c, err := outbox.NewConsumer(linked, name, func(ctx context.Context, tx bun.Tx, batch []outbox.Event) error {
		for _, ev := range batch {
			switch ev.ID {
			case poison.ID:
				if _, err := tx.ExecContext(ctx, "SELECT 'poison event'"); err != nil {
					return err
				}
			case healthy.ID:
				mu.Lock()
				healthyHandled++
				in, rel := entered, release
				mu.Unlock()
				close(in)
				<-rel
				if _, err := tx.ExecContext(ctx, "SELECT 'healthy event'"); err != nil {
					return err
				}
			}
		}
		return record(ctx, tx, batch)
	}, outbox.WithBackoff(time.Millisecond, 2*time.Millisecond), outbox.WithLogger(logger))
	require.NoError(t, err)
	isPoison := func(q string) bool { return strings.Contains(q, "poison event") }

	healthyDone, poisonDone, crashes := false, false, 0
	for round := 0; !healthyDone || !poisonDone; round++ {
		require.Less(t, round, 8, "still crashing after %d rounds", round)
		for len(waiting) > 0 {
			<-waiting
		}
		mu.Lock()
		entered, release = make(chan struct{}), make(chan struct{})
		in, rel := entered, release
		mu.Unlock()
		stopped := make(chan struct{})
		link.ArmThen(isPoison, false, func() { server.Stop(t, 0); close(stopped) })

		healthyErr, poisonErr := make(chan error, 1), make(chan error, 1)
		if healthyDone {
			healthyErr <- nil
		} else {
			// The healthy stream's delivery first, held inside its handler...
			go func() { healthyErr <- c.Deliver(ctx, []outbox.Event{healthy}) }()
			select {
			case <-in:
			case err := <-healthyErr:
				// Returned before its handler: on a loaded machine, a statement before it can
				// fail on a connection to the server just restarted. Without the healthy
				// handling in flight the round would not be the one this test is about (a
				// crash under it), and the count below would be off by one: run it again.
				// (Seen once in CI: healthyHandled 1.)
				t.Logf("round %d: the healthy delivery returned before its handler: %v", round, err)
				link.Disarm()
				continue
			}
		}
		if poisonDone {
			poisonErr <- nil
		} else {
			// ...then the poison stream's, which crashes the server unless it waits for the
			// healthy handling to end.
			go func() { poisonErr <- c.Deliver(ctx, []outbox.Event{poison}) }()
			select {
			case <-stopped:
			case <-waiting:
			case err := <-poisonErr:
				poisonErr <- err
			}
		}
		close(rel)
		herr, perr := <-healthyErr, <-poisonErr
		cut, _ := link.Disarm()
		healthyDone, poisonDone = herr == nil, perr == nil
		if len(cut) == 0 {
			require.NoError(t, herr, "no crash")
			require.NoError(t, perr, "no crash")
			continue
		}
		require.Len(t, cut, 1)
		require.Error(t, perr, "the poison event crashed the server")
		require.True(t, depfail.Is(perr), "%v", perr)
		require.True(t, herr == nil || depfail.Is(herr), "%v", herr)
		crashes++
		<-stopped
		server.Start(t)
	}
	assert.Equal(t, 3, crashes)
	assert.Equal(t, 2, healthyHandled, "the healthy event: crashed under once, then applied")
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), []outbox.Event{healthy})
	letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
	require.NoError(t, err)
	require.Len(t, letters, 1, "only the poison event dead-lettered")
	assert.Equal(t, poison.ID, letters[0].Event.ID)
	assert.Equal(t, 3, letters[0].Attempts)
}

// signalingHandler is a slog.Handler sending on ch for each record whose message contains
// match.
type signalingHandler struct {
	match string
	ch    chan<- struct{}
}

func (h *signalingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *signalingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.match) {
		h.ch <- struct{}{}
	}
	return nil
}

func (h *signalingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *signalingHandler) WithGroup(string) slog.Handler      { return h }

// TestConsumerDatabaseDownOutsideTheHandlerIsNeverCounted: the database server killed at
// one of the consumer's own statements (the transaction's start, the processed-events
// read, the processed record, the COMMIT), before it reaches the server or, but for the
// COMMIT, once it ran, at 4 deliveries in a row, is an outage, not the events' doing: it
// was down at the start of their handling or went down after it, and only a crash under
// the handler counts against them. Every delivery fails as the database unavailable; the
// next one, on a server that stays up, applies every event exactly once, dead-letters
// nothing and leaves no lease. The cut points include the leases' own statements (the
// read, the insert, the delete in the handler's transaction): the Consumer is in its
// lease window.
func TestConsumerDatabaseDownOutsideTheHandlerIsNeverCounted(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db, linked, link := testenv.LinkedMySQLAt(t, dsn)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	events := fakeEvents(2, 1)
	consumer := func(t *testing.T, name string) *outbox.Consumer {
		t.Helper()
		c, err := outbox.NewConsumer(linked, name, outboxtest.RecordingHandler(name), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond))
		require.NoError(t, err)
		return c
	}
	c := consumer(t, "down-clean")
	link.Arm(nil, false)
	require.NoError(t, c.Deliver(ctx, events))
	_, statements := link.Disarm()
	own := func(q string) bool { return !strings.Contains(q, "test_applied") }
	for _, p := range testenv.CutPoints(statements, own) {
		name := "down-" + strings.ReplaceAll(p.String(), "/", "-")
		t.Run(p.String(), func(t *testing.T) {
			c := consumer(t, name)
			deliver := func() error { return c.Deliver(ctx, events) }
			for range 4 {
				cut := link.Crash(t, server, p.Match(), p.After, deliver, nil)
				server.Start(t)
				if p.After && testenv.IsCommit(cut) {
					break // committed: the next delivery finds the events applied
				}
			}
			require.NoError(t, c.Deliver(ctx, events))
			requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), events)
			letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
			require.NoError(t, err)
			assert.Empty(t, letters, "nothing dead-lettered")
			assert.Zero(t, leasesOf(t, db, name), "every lease removed or given back, the owed ones too")
		})
	}
}

// TestConsumerHandlerBehindALockIsNotDeadLettered: a handler whose write waits for a row
// lock another transaction holds (a hot aggregate row, a backup's global read lock) meets
// the server's lock wait timeout (1205): contention, not the event's fault. sqlutil.InTx no
// longer runs the transaction again after one, so the Consumer sees each lock wait as it
// ends; it must return it for the batch to come again later, not count it as a failed
// attempt and dead-letter a healthy event after WithMaxAttempts lock waits. Here the lock
// is held for 6 lock waits of the consumer's (1 s each): every event is applied exactly
// once, nothing is dead-lettered, and each failed delivery failed with the lock wait.
// The same holds for a handler that panics with the error (a must-style helper): a panic
// whose value is an error is that error, and a panic that carried the lock wait as text
// alone had healthy events dead-lettered (ErrHandlerPanicked, after WithMaxAttempts).
func TestConsumerHandlerBehindALockIsNotDeadLettered(t *testing.T) {
	for _, panics := range []bool{false, true} {
		t.Run(map[bool]string{false: "returns", true: "panics"}[panics], func(t *testing.T) {
			t.Parallel()
			handlerBehindALock(t, panics)
		})
	}
}

// handlerBehindALock is TestConsumerHandlerBehindALockIsNotDeadLettered with a handler
// that returns its statement's error, or panics with it.
func handlerBehindALock(t *testing.T, panics bool) {
	cfg, err := mysql.ParseDSN(testenv.MySQLDSN(t))
	require.NoError(t, err)
	cfg.Params = map[string]string{"innodb_lock_wait_timeout": "1"}
	sqldb, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	db := bun.NewDB(sqldb, mysqldialect.New())
	t.Cleanup(func() { _ = db.Close() })
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	_, err = db.ExecContext(ctx, "CREATE TABLE test_hot (id INT PRIMARY KEY, n INT NOT NULL)")
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "INSERT INTO test_hot VALUES (1, 0)")
	require.NoError(t, err)
	holder, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = holder.ExecContext(ctx, "UPDATE test_hot SET n = n WHERE id = 1")
	require.NoError(t, err)

	const held = 6 // lock waits the holder outlasts: more than WithMaxAttempts
	const name = "behind-a-lock"
	waits := 0
	record := outboxtest.RecordingHandler(name)
	c, err := outbox.NewConsumer(db, name, func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
		for range evs {
			_, err := tx.ExecContext(ctx, "UPDATE test_hot SET n = n + 1 WHERE id = 1")
			if sqlutil.IsLockWaitTimeout(err) {
				if waits++; waits == held {
					require.NoError(t, holder.Rollback())
				}
			}
			if err != nil && panics {
				panic(err)
			}
			if err != nil {
				return err
			}
		}
		return record(ctx, tx, evs)
	}, outbox.WithMaxAttempts(5), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond))
	require.NoError(t, err)
	events := fakeEvents(3, 1)
	for delivery := 0; ; delivery++ {
		require.Less(t, delivery, 2*held, "still failing")
		err := c.Deliver(ctx, events)
		if err == nil {
			break
		}
		require.True(t, sqlutil.IsLockWaitTimeout(err), "delivery %d failed with %v, not the lock wait", delivery, err)
	}
	assert.Equal(t, held, waits)
	letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
	require.NoError(t, err)
	assert.Empty(t, letters, "a healthy event dead-lettered for waiting on a lock")
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), events)
	var n int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT n FROM test_hot WHERE id = 1").Scan(&n))
	assert.Equal(t, len(events), n)
}
