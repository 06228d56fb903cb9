package outbox_test

import (
	"context"
	"errors"
	"fmt"
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

// relayDeadLetter adds three events of one stream (topic and key name) on db, has a relay
// on linked whose publisher refuses the second set it aside, then lets the publisher take
// it (its cause fixed): it returns the relay, its publisher and the events, the first one
// published, the second a dead letter, the third waiting behind it.
func relayDeadLetter(t *testing.T, db, linked *bun.DB, name string) (*outbox.Relay, *refusingPublisher, []outbox.Event) {
	t.Helper()
	ctx := context.Background()
	var evs []outbox.Event
	for range 3 {
		added, err := outbox.Add(ctx, db, outbox.Event{Topic: "t-" + name, Key: name, Type: "x", Payload: []byte(`{}`)})
		require.NoError(t, err)
		evs = append(evs, added...)
	}
	pub := &refusingPublisher{refuse: map[string]bool{evs[1].ID: true}}
	r, err := outbox.NewRelay(linked, pub)
	require.NoError(t, err)
	relayUntilDead(t, r, 1)
	require.Equal(t, []string{evs[0].ID}, ids(pub.snapshot()))
	pub.accept(evs[1].ID)
	return r, pub, evs
}

// relayUntilDead runs relay rounds until the relay has n dead letters and nothing else to
// send, failing the test if it never does.
func relayUntilDead(t *testing.T, r *outbox.Relay, n int) {
	t.Helper()
	ctx := context.Background()
	for range 100 {
		sent, err := r.RelayOnce(ctx)
		require.NoError(t, err)
		dead, err := r.DeadLetters(ctx, 0)
		require.NoError(t, err)
		if sent == 0 && len(dead) == n {
			return
		}
	}
	t.Fatalf("the relay never settled with %d dead letters", n)
}

// relayResolveExact checks the end state of relayDeadLetter's stream once its dead letter
// was redriven (skip false) or skipped and the relay drained the outbox: every event
// published once, in order, but a skipped one never; no dead letter left; the skipped
// event's row marked sent (its reason kept), none left unsent.
func relayResolveExact(t *testing.T, db *bun.DB, r *outbox.Relay, pub *refusingPublisher, evs []outbox.Event, skip bool) {
	t.Helper()
	ctx := context.Background()
	relayUntilDone(t, r, db)
	want := ids(evs)
	if skip {
		want = []string{evs[0].ID, evs[2].ID}
	}
	assert.Equal(t, want, ids(pub.snapshot()), "published once each, in order")
	dead, err := r.DeadLetters(ctx, 0)
	require.NoError(t, err)
	assert.Empty(t, dead)
	var row struct {
		Sent   bool    `bun:"sent"`
		Dead   bool    `bun:"dead"`
		Reason *string `bun:"dead_reason"`
	}
	require.NoError(t, db.NewSelect().Table(outbox.TableEvents).
		ColumnExpr("sent_at IS NOT NULL AS sent, dead_at IS NOT NULL AS dead, dead_reason").
		Where("id = ?", evs[1].ID).Scan(ctx, &row))
	assert.True(t, row.Sent)
	assert.Equal(t, skip, row.Dead, "a skipped event keeps when it was set aside, a redriven one does not")
	if skip {
		require.NotNil(t, row.Reason)
		assert.Contains(t, *row.Reason, "message too large")
	} else {
		assert.Nil(t, row.Reason)
	}
	assert.Zero(t, outboxtest.Unsent(t, db))
	same, other := r.Redrive, r.Skip
	if skip {
		same, other = r.Skip, r.Redrive
	}
	require.NoError(t, same(ctx, evs[1].ID), "resolved once: done already")
	require.ErrorIs(t, other(ctx, evs[1].ID), outbox.ErrResolvedOtherwise, "resolved once")
	assert.Equal(t, want, ids(pub.snapshot()), "nothing published again")
}

// TestRelayResolveCut: an operator's Relay.Redrive, and Relay.Skip, of a dead letter, its
// database connection cut at its statement (the one UPDATE, autocommitted): before the
// statement reaches the server (it never runs) and after the server answered it (it ran,
// the answer is lost). The call fails as the database being unavailable (depfail.Is: a 503
// for refserver's console), never as ErrNotDeadLetter. The operator's retry then succeeds,
// whether the first call ran (resolved already: nothing changes) or not; once the relay drained the
// outbox, the event is published exactly once (or never, skipped exactly once), the dead
// letter is gone, the events behind it published once each, in order.
func TestRelayResolveCut(t *testing.T) {
	db, linked, link := testenv.LinkedMySQL(t)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	for _, skip := range []bool{false, true} {
		verb := map[bool]string{false: "redrive", true: "skip"}[skip]
		resolve := func(r *outbox.Relay, id string) error {
			if skip {
				return r.Skip(ctx, id)
			}
			return r.Redrive(ctx, id)
		}
		t.Run(verb, func(t *testing.T) {
			r, pub, evs := relayDeadLetter(t, db, linked, verb+"-clean")
			link.Arm(nil, false)
			require.NoError(t, resolve(r, evs[1].ID))
			_, statements := link.Disarm()
			t.Logf("%s sends %d statements: %q", verb, len(statements), statements)
			require.NotEmpty(t, statements)
			relayResolveExact(t, db, r, pub, evs, skip)
			for _, p := range testenv.CutPoints(statements, nil) {
				after, n := p.After, p.N
				name := fmt.Sprintf("%s-%t-%d", verb, after, n)
				t.Run(p.String(), func(t *testing.T) {
					r, pub, evs := relayDeadLetter(t, db, linked, name)
					link.Arm(p.Match(), after)
					err := resolve(r, evs[1].ID)
					cut, _ := link.Disarm()
					require.Len(t, cut, 1)
					require.Error(t, err, "cut at %q", cut[0])
					assert.True(t, depfail.Is(err), "cut at %q: %v", cut[0], err)
					assert.NotErrorIs(t, err, outbox.ErrNotDeadLetter)
					require.NoError(t, resolve(r, evs[1].ID), "the operator's retry: the first call ran (resolved already), or never did")
					relayResolveExact(t, db, r, pub, evs, skip)
				})
			}
		})
	}
}

// TestRelayResolveCrash is TestRelayResolveCut with the database server killed (SIGKILL)
// at the resolving UPDATE, before it reaches the server and once it has committed, and
// started again: the call, and the operator's retry while the server is down, fail as the
// database being unavailable; after the restart the retry and the relay leave the exact
// end state.
func TestRelayResolveCrash(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db, linked, link := testenv.LinkedMySQLAt(t, dsn)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	isUpdate := func(q string) bool { return strings.HasPrefix(q, "UPDATE") }
	for _, skip := range []bool{false, true} {
		for _, after := range []bool{false, true} {
			name := fmt.Sprintf("crash-%t-%t", skip, after)
			t.Run(fmt.Sprintf("skip=%t/after=%t", skip, after), func(t *testing.T) {
				resolve := func(r *outbox.Relay, id string) error {
					if skip {
						return r.Skip(ctx, id)
					}
					return r.Redrive(ctx, id)
				}
				r, pub, evs := relayDeadLetter(t, db, linked, name)
				call := func() error { return resolve(r, evs[1].ID) }
				link.Crash(t, server, testenv.Nth(1, isUpdate), after, call, func() error {
					err := call()
					assert.NotErrorIs(t, err, outbox.ErrNotDeadLetter, "the retry while the server is down")
					return err
				})
				server.Start(t)
				require.NoError(t, resolve(r, evs[1].ID), "the first call committed (resolved already), or never ran")
				relayResolveExact(t, db, r, pub, evs, skip)
			})
		}
	}
}

// TestConsumerRedriveCut: Consumer.Redrive of a dead letter whose cause is fixed, its
// database connection cut at each of its statements in turn — the listing, the
// transaction applying the event and recording it processed (the handler's own INSERT and
// the COMMIT included), the removal of the dead letter: before the statement reaches the
// server and after the server answered it; with one attempt per event (WithMaxAttempts(1))
// and with two. The call fails as the database being unavailable, or applies the letter
// (a cut in the handler's own statement is the database failing, not the event: never a
// reason to give up on it again); the operator's retry then leaves the exact end state:
// the event applied exactly once, the other events once, the dead letter gone, and a
// third Redrive finding nothing.
func TestConsumerRedriveCut(t *testing.T) {
	db, linked, link := testenv.LinkedMySQL(t)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	events := fakeEvents(3, 1)
	for _, attempts := range []int{1, 2} {
		t.Run(fmt.Sprintf("attempts=%d", attempts), func(t *testing.T) {
			consumer := func(t *testing.T, name string) *outbox.Consumer {
				return redriveConsumer(t, db, linked, name, attempts, events)
			}
			exact := func(t *testing.T, c *outbox.Consumer, name string) { redriveExact(t, db, c, name, events) }

			clean := fmt.Sprintf("clean-%d", attempts)
			c := consumer(t, clean)
			link.Arm(nil, false)
			n, err := c.Redrive(ctx, 0)
			_, statements := link.Disarm()
			require.NoError(t, err)
			require.Equal(t, 1, n)
			exact(t, c, clean)
			t.Logf("Redrive sends %d statements: %q", len(statements), statements)
			require.Contains(t, statements, "COMMIT")
			for _, p := range testenv.CutPoints(statements, nil) {
				after, k := p.After, p.N
				name := fmt.Sprintf("redrive-%d-%t-%d", attempts, after, k)
				t.Run(p.String(), func(t *testing.T) {
					c := consumer(t, name)
					link.Arm(p.Match(), after)
					first, err := c.Redrive(ctx, 0)
					cut, _ := link.Disarm()
					require.Len(t, cut, 1)
					if err != nil {
						assert.True(t, depfail.Is(err), "cut at %q: %v", cut[0], err)
						assert.Zero(t, first)
					} else {
						assert.Equal(t, 1, first, "cut at %q, answered without error: applied", cut[0])
					}
					again, err := c.Redrive(ctx, 0) // the operator's retry
					require.NoError(t, err)
					want := 1 // the letter applied and removed, by the first call or the retry
					if after && strings.HasPrefix(cut[0], "DELETE FROM `outbox_dead_letters`") {
						want = 0 // removed by the first call, whose count was lost with its answer
					}
					assert.Equal(t, want, first+again, "cut at %q", cut[0])
					exact(t, c, name)
				})
			}
		})
	}
}

// TestConsumerDeliverCut: Consumer.Deliver of events one at a time (WithBatchSize(1), as
// a consumer of a stream delivers them), with one attempt per event (WithMaxAttempts(1)),
// its database connection cut at each of its statements in turn — each event's
// transaction (the processed-events read, the handler's own INSERT, the processed record,
// the COMMIT): before the statement reaches the server and after the
// server answered it. The database failing is not the events' fault: the call fails as the
// database being unavailable, or applies the batch, and never dead-letters an event; the
// caller's delivery again applies every event exactly once.
func TestConsumerDeliverCut(t *testing.T) {
	db, linked, link := testenv.LinkedMySQL(t)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	events := fakeEvents(3, 1)
	consumer := func(t *testing.T, name string) *outbox.Consumer {
		t.Helper()
		c, err := outbox.NewConsumer(linked, name, outboxtest.RecordingHandler(name), outbox.WithMaxAttempts(1), outbox.WithBatchSize(1),
			outbox.WithBackoff(time.Millisecond, 2*time.Millisecond))
		require.NoError(t, err)
		return c
	}
	exact := func(t *testing.T, c *outbox.Consumer, name string) {
		t.Helper()
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), events)
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
		require.NoError(t, err)
		assert.Empty(t, letters, "nothing dead-lettered")
		require.NoError(t, c.Deliver(ctx, events), "a late duplicate of the whole batch")
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, name), events)
	}
	c := consumer(t, "deliver-clean")
	link.Arm(nil, false)
	require.NoError(t, c.Deliver(ctx, events))
	_, statements := link.Disarm()
	exact(t, c, "deliver-clean")
	t.Logf("Deliver sends %d statements: %q", len(statements), statements)
	require.Contains(t, statements, "COMMIT")
	for _, p := range testenv.CutPoints(statements, nil) {
		after, k := p.After, p.N
		name := fmt.Sprintf("deliver-%t-%d", after, k)
		t.Run(p.String(), func(t *testing.T) {
			c := consumer(t, name)
			link.Arm(p.Match(), after)
			err := c.Deliver(ctx, events)
			cut, _ := link.Disarm()
			require.Len(t, cut, 1)
			if err != nil {
				assert.True(t, depfail.Is(err), "cut at %q: %v", cut[0], err)
				require.NoError(t, c.Deliver(ctx, events), "the delivery again")
			}
			exact(t, c, name)
		})
	}
}

// redriveConsumer returns a consumer named name on linked, trying each event attempts
// times, with events delivered and the second dead-lettered; its handler takes that event
// from then on (the cause fixed).
func redriveConsumer(t *testing.T, db, linked *bun.DB, name string, attempts int, events []outbox.Event) *outbox.Consumer {
	t.Helper()
	ctx := context.Background()
	poison := events[1].ID
	fixed := false
	record := outboxtest.RecordingHandler(name)
	c, err := outbox.NewConsumer(linked, name, func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
		for _, ev := range evs {
			if ev.ID == poison && !fixed {
				return outbox.Permanent(errors.New("cannot apply: unknown product"))
			}
		}
		return record(ctx, tx, evs)
	}, outbox.WithMaxAttempts(attempts), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond))
	require.NoError(t, err)
	require.NoError(t, c.Deliver(ctx, events))
	letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
	require.NoError(t, err)
	require.Len(t, letters, 1)
	require.Equal(t, poison, letters[0].ID)
	fixed = true
	return c
}

// redriveExact checks the end state of redriveConsumer's consumer once its dead letter is
// redriven: every event applied exactly once, the dead letter gone, a further Redrive
// finding nothing, and a late duplicate of the whole batch applying nothing.
func redriveExact(t *testing.T, db *bun.DB, c *outbox.Consumer, name string, events []outbox.Event) {
	t.Helper()
	ctx := context.Background()
	requireExactlyOnceInOrder(t, sortedBySeq(outboxtest.Applied(t, db, name)), events)
	letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
	require.NoError(t, err)
	assert.Empty(t, letters, "the dead letter is gone")
	n, err := c.Redrive(ctx, 0)
	require.NoError(t, err)
	assert.Zero(t, n, "nothing left to redrive")
	require.NoError(t, c.Deliver(ctx, events), "a late duplicate of the whole batch")
	requireExactlyOnceInOrder(t, sortedBySeq(outboxtest.Applied(t, db, name)), events)
}

// TestConsumerRedriveCrash is TestConsumerRedriveCut with the database server killed
// (SIGKILL) at the COMMIT applying the letter and at the DELETE removing the letter, before each
// reaches the server and once it has run, and started again: the call, and the operator's
// retry while the server is down, fail as the database being unavailable; after the
// restart the retry leaves the exact end state.
func TestConsumerRedriveCrash(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db, linked, link := testenv.LinkedMySQLAt(t, dsn)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	events := fakeEvents(3, 1)
	isDelete := func(q string) bool { return strings.HasPrefix(q, "DELETE FROM `outbox_dead_letters`") }
	for _, at := range []string{"COMMIT", "DELETE"} {
		match := testenv.IsCommit
		if at == "DELETE" {
			match = isDelete
		}
		for _, after := range []bool{false, true} {
			name := fmt.Sprintf("crash-%s-%t", at, after)
			t.Run(fmt.Sprintf("%s/after=%t", at, after), func(t *testing.T) {
				c := redriveConsumer(t, db, linked, name, 2, events)
				redrive := func() error { _, err := c.Redrive(ctx, 0); return err }
				link.Crash(t, server, testenv.Nth(1, match), after, redrive, redrive)
				server.Start(t)
				n, err := c.Redrive(ctx, 0)
				require.NoError(t, err)
				want := 1
				if at == "DELETE" && after {
					want = 0 // applied and removed by the first call
				}
				assert.Equal(t, want, n)
				redriveExact(t, db, c, name, events)
			})
		}
	}
}

// sortedBySeq returns rows ordered by sequence (a redriven event is applied after the
// events that followed it).
func sortedBySeq(rows []outboxtest.AppliedRow) []outboxtest.AppliedRow {
	out := append([]outboxtest.AppliedRow(nil), rows...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].Seq < out[i].Seq {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestConsumerPoisonEventKillingItsConnection: an event whose handling ends its own database
// connection every time (here the handler kills it; in production, say, a statement the
// server refuses by closing the connection) while the database answers is a poison event:
// Deliver isolates it, tries it a bounded number of times, and dead-letters it, and the
// events around it are applied exactly once. (The database failing, every connection at
// once, is still never counted: TestConsumerDeliverCut, TestConsumerRedriveCrash.)
func TestConsumerPoisonEventKillingItsConnection(t *testing.T) {
	db := testenv.MySQL(t)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	events := fakeEvents(3, 1)
	poison := events[1].ID
	record := outboxtest.RecordingHandler("poison")
	c, err := outbox.NewConsumer(db, "poison", func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
		for _, ev := range evs {
			if ev.ID == poison {
				var id int64
				if err := tx.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, fmt.Sprintf("KILL %d", id))
				return err
			}
		}
		return record(ctx, tx, evs)
	}, outbox.WithMaxAttempts(2), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond))
	require.NoError(t, err)

	var errs []error
	for range 5 { // the caller delivers the batch again while Deliver fails
		if err = c.Deliver(ctx, events); err == nil {
			break
		}
		errs = append(errs, err)
	}
	require.NoError(t, err, "the poison event never dead-lettered; Deliver failed with %v", errs)
	requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "poison"), []outbox.Event{events[0], events[2]})
	letters, err := outbox.NewDeadLetterTable(db).List(ctx, "poison", 0)
	require.NoError(t, err)
	require.Len(t, letters, 1)
	assert.Equal(t, poison, letters[0].Event.ID)
}

// TestConsumerPoisonEventCrashingTheDatabase: an event whose handling brings the whole
// database server down every time (killed here at the handler's statement; in production, a
// statement hitting a server bug) cannot be told from an outage within one Deliver call,
// which only sees the database gone. Counted across deliveries, it is: the batch that
// crashed is isolated at its next delivery, each crash under one event alone counts against
// it, and after 3 crashes in a row it is dead-lettered without being handled again, the
// events around it applied exactly once. An event whose handling met an outage twice, and
// then none, is applied.
func TestConsumerPoisonEventCrashingTheDatabase(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db, linked, link := testenv.LinkedMySQLAt(t, dsn)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		crashes int // deliveries the marked event's handling crashes the server at
		poison  bool
	}{
		{name: "poison", crashes: 1000, poison: true},
		{name: "outage-twice", crashes: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events := fakeEvents(3, 1)
			marked := events[1].ID
			handled := 0 // times the marked event's handling reached the server
			c, err := outbox.NewConsumer(linked, tc.name, markingHandler(tc.name, marked, &handled),
				outbox.WithBackoff(time.Millisecond, 2*time.Millisecond))
			require.NoError(t, err)
			crashes := deliverCrashing(t, c, link, server, events, func(crashes int) bool { return crashes < tc.crashes }, nil)
			letters, err := outbox.NewDeadLetterTable(db).List(ctx, tc.name, 0)
			require.NoError(t, err)
			if tc.poison {
				assert.Equal(t, 3, crashes)
				assert.Equal(t, 3, handled, "handled again after its third crash")
				requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, tc.name), []outbox.Event{events[0], events[2]})
				require.Len(t, letters, 1)
				assert.Equal(t, marked, letters[0].Event.ID)
				assert.Equal(t, 3, letters[0].Attempts)
				return
			}
			assert.Equal(t, 2, crashes)
			assert.Equal(t, 3, handled)
			requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, tc.name), events)
			assert.Empty(t, letters)
		})
	}
}

// TestDeadLetterTableStoreCut: storing a letter again replaces it whole, a delete and an
// insert in one transaction; its connection cut at each of its statements, before the
// statement reaches the server and after the server answered, the table holds the old
// letter or the new one, never none and never both, and the caller's retry leaves exactly
// the new one (here stored altered: its key cut to the column).
func TestDeadLetterTableStoreCut(t *testing.T) {
	db, linked, link := testenv.LinkedMySQL(t)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	ev := fakeEvents(1, 1)[0]
	long := ev
	long.Key = strings.Repeat("k", 200)
	letter := func(name string, ev outbox.Event) outbox.DeadLetter {
		return outbox.DeadLetter{Event: ev, Consumer: name, Error: "e", Attempts: 1, At: time.Now()}
	}
	only := func(t *testing.T, name string) outbox.DeadLetter {
		t.Helper()
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
		require.NoError(t, err)
		require.Len(t, letters, 1)
		return letters[0]
	}
	store := func(t *testing.T, name string) ([]string, error) {
		require.NoError(t, outbox.NewDeadLetterTable(db).DeadLetter(ctx, letter(name, ev)))
		err := outbox.NewDeadLetterTable(linked).DeadLetter(ctx, letter(name, long))
		cut, statements := link.Disarm()
		if len(cut) == 0 {
			return statements, err
		}
		return cut, err
	}
	link.Arm(nil, false)
	statements, err := store(t, "clean")
	require.NoError(t, err)
	require.Contains(t, statements, "COMMIT")
	assert.NotEmpty(t, only(t, "clean").Altered)
	for _, p := range testenv.CutPoints(statements, nil) {
		name := fmt.Sprintf("store-%t-%d", p.After, p.N)
		t.Run(p.String(), func(t *testing.T) {
			link.Arm(p.Match(), p.After)
			cut, err := store(t, name)
			require.Len(t, cut, 1)
			if err != nil {
				assert.True(t, depfail.Is(err), "cut at %q: %v", cut[0], err)
			}
			got := only(t, name) // the old letter or the new one
			assert.Contains(t, []string{ev.Key, strings.Repeat("k", outbox.MaxKeyLen)}, got.Key)
			require.NoError(t, outbox.NewDeadLetterTable(linked).DeadLetter(ctx, letter(name, long)), "the retry")
			got = only(t, name)
			assert.Equal(t, strings.Repeat("k", outbox.MaxKeyLen), got.Key)
			assert.NotEmpty(t, got.Altered)
		})
	}
}
