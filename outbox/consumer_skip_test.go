package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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

// poisonConsumer returns consumer "c", whose handler fails every batch holding an event
// whose ID is in poison (until it is taken out), and records the others.
func poisonConsumer(t *testing.T, db *bun.DB, poison *sync.Map, opts ...outbox.Option) *outbox.Consumer {
	t.Helper()
	record := outboxtest.RecordingHandler("c")
	opts = append([]outbox.Option{outbox.WithMaxAttempts(2), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond)}, opts...)
	c, err := outbox.NewConsumer(db, "c", func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
		for _, ev := range evs {
			if _, bad := poison.Load(ev.ID); bad {
				return errors.New("cannot apply: unknown product")
			}
		}
		return record(ctx, tx, evs)
	}, opts...)
	require.NoError(t, err)
	return c
}

// appliedCount returns how many times consumer "c" applied each event.
func appliedCount(t *testing.T, db *bun.DB) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for _, r := range outboxtest.Applied(t, db, "c") {
		seen[r.EventID]++
	}
	return seen
}

// TestConsumerSkipGivesUpOnADeadLetterForGood: Skip removes a consumer's dead letter and
// records its event as processed, in one transaction, so that the broker delivering the
// event again (a restart before the offset was committed, a replay from an earlier
// offset) does not apply it, even once the handler would take it, and even after the
// Cleaner's retention of processed records. It is idempotent; an event that was applied
// (redriven, or delivered again and applied) is ErrAlreadyApplied and an ID that was
// never a dead letter of the consumer ErrNotDeadLetter, both changing nothing.
func TestConsumerSkipGivesUpOnADeadLetterForGood(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		clk := newClock()
		events := fakeEvents(6, 3)
		skipped, redriven, appliedMeanwhile := events[1].ID, events[2].ID, events[4].ID
		var poison sync.Map
		for _, id := range []string{skipped, redriven, appliedMeanwhile} {
			poison.Store(id, true)
		}
		c := poisonConsumer(t, db, &poison, outbox.WithClock(clk.Now))
		require.NoError(t, c.Deliver(ctx, events))
		table := outbox.NewDeadLetterTable(db)
		letters, err := table.List(ctx, "c", 0)
		require.NoError(t, err)
		require.Len(t, letters, 3)

		for _, id := range []string{"no-such-event", "", skipped + " ", "\x00"} {
			require.ErrorIs(t, c.Skip(ctx, id), outbox.ErrNotDeadLetter, "%q: never a dead letter of c", id)
		}
		require.ErrorIs(t, c.Skip(ctx, events[0].ID), outbox.ErrAlreadyApplied, "applied at once")
		d, err := outbox.NewConsumer(db, "d", outboxtest.RecordingHandler("d"))
		require.NoError(t, err)
		require.ErrorIs(t, d.Skip(ctx, skipped), outbox.ErrNotDeadLetter, "a letter of c, not d")
		letters, err = table.List(ctx, "c", 0)
		require.NoError(t, err)
		require.Len(t, letters, 3, "nothing changed")
		require.NoError(t, c.Skip(ctx, skipped))
		require.NoError(t, c.Skip(ctx, skipped), "sent again after its answer was lost")

		// The redriven one is applied; the one delivered again is applied while its letter stays.
		poison.Delete(redriven)
		poison.Delete(appliedMeanwhile)
		n, err := c.Redrive(ctx, 1)
		require.NoError(t, err)
		require.Equal(t, 1, n, "the oldest letter left: %s", redriven)
		require.NoError(t, c.Deliver(ctx, []outbox.Event{events[4]}))
		require.ErrorIs(t, c.Skip(ctx, redriven), outbox.ErrAlreadyApplied)
		require.ErrorIs(t, c.Skip(ctx, appliedMeanwhile), outbox.ErrAlreadyApplied)
		letters, err = table.List(ctx, "c", 0)
		require.NoError(t, err)
		require.Len(t, letters, 1, "the applied event's letter stays: Skip changed nothing")
		assert.Equal(t, appliedMeanwhile, letters[0].ID)

		// The handler would take the skipped event now; the broker delivers everything
		// again, and the skipped event again after the processed records' retention.
		poison.Delete(skipped)
		require.NoError(t, c.Deliver(ctx, events))
		clk.Advance(72 * time.Hour)
		cl, err := outbox.NewCleaner(db, outbox.WithClock(clk.Now), outbox.WithProcessedRetention(48*time.Hour))
		require.NoError(t, err)
		_, err = cl.CleanOnce(ctx)
		require.NoError(t, err)
		kept, err := db.NewSelect().Table(outbox.TableProcessed).Where("consumer = 'c'").Count(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 2, kept, "past the retention only the skipped event's record and the one a letter holds stay")
		require.NoError(t, c.Deliver(ctx, []outbox.Event{events[1]}))
		seen := appliedCount(t, db)
		for _, ev := range events {
			want := 1
			if ev.ID == skipped {
				want = 0
			}
			assert.Equal(t, want, seen[ev.ID], "event %s", ev.ID)
		}
		require.NoError(t, c.Skip(ctx, skipped), "still answered as skipped after the retention")
		letters, err = table.List(ctx, "c", 0)
		require.NoError(t, err)
		require.Len(t, letters, 1)
		assert.Equal(t, appliedMeanwhile, letters[0].ID)
	})
}

// TestConsumerSkipRacingADelivery: an operator skips a dead letter while the broker
// delivers its event again and the handler now takes it. Exactly one of them wins: the
// event is applied once and Skip answers ErrAlreadyApplied (its letter stays, and a
// redrive finds it applied), or it is skipped and never applied.
func TestConsumerSkipRacingADelivery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		const rounds = 12
		events := fakeEvents(rounds, rounds)
		var poison sync.Map
		for _, ev := range events {
			poison.Store(ev.ID, true)
		}
		c := poisonConsumer(t, db, &poison)
		require.NoError(t, c.Deliver(ctx, events))
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, "c", 0)
		require.NoError(t, err)
		require.Len(t, letters, rounds)
		for _, ev := range events {
			poison.Delete(ev.ID)
		}
		var skips, applies atomic.Int64
		answers := make([]error, rounds)
		var wg sync.WaitGroup
		for i, ev := range events {
			wg.Add(2)
			go func() {
				defer wg.Done()
				answers[i] = c.Skip(ctx, ev.ID)
			}()
			go func() {
				defer wg.Done()
				assert.NoError(t, c.Deliver(ctx, []outbox.Event{ev}))
			}()
		}
		wg.Wait()
		seen := appliedCount(t, db)
		for i, ev := range events {
			switch err := answers[i]; {
			case err == nil:
				skips.Add(1)
				assert.Zero(t, seen[ev.ID], "skipped, then applied: %s", ev.ID)
			case errors.Is(err, outbox.ErrAlreadyApplied):
				applies.Add(1)
				assert.Equal(t, 1, seen[ev.ID], "%s", ev.ID)
			default:
				t.Errorf("Skip(%s): %v", ev.ID, err)
			}
		}
		t.Logf("%d skipped, %d applied first", skips.Load(), applies.Load())
		// Whatever is left is resolved by a redrive, which finds the applied ones applied.
		n, err := c.Redrive(ctx, 0)
		require.NoError(t, err)
		assert.Equal(t, int(applies.Load()), n, "the letters of the events applied first")
		letters, err = outbox.NewDeadLetterTable(db).List(ctx, "c", 0)
		require.NoError(t, err)
		assert.Empty(t, letters)
		require.NoError(t, c.Deliver(ctx, events))
		assert.Equal(t, appliedCount(t, db), seen, "delivered again: nothing more applied")
		assert.Equal(t, rounds, len(seen)+int(skips.Load()), fmt.Sprint(seen))
	})
}

// TestConsumerSkipCut: an operator's Consumer.Skip, its database connection cut at each
// of its statements, before the statement reaches the server (it never runs) and after the
// server answered it (it ran, the answer is lost; after COMMIT, the skip committed). The
// call fails as the database being unavailable (a 503 for refserver's console), never as
// ErrNotDeadLetter or ErrAlreadyApplied; the operator's retry then succeeds whether the
// first call committed or not, and the end state is exact: the letter gone, the event
// recorded as processed, and the event, delivered again with the handler now taking it,
// not applied.
func TestConsumerSkipCut(t *testing.T) {
	db, linked, link := testenv.LinkedMySQL(t)
	outboxtest.Prepare(t, db)
	ctx := context.Background()
	var taking atomic.Bool
	letter := func(t *testing.T, name string) (*outbox.Consumer, outbox.Event) {
		t.Helper()
		record := outboxtest.RecordingHandler(name)
		c, err := outbox.NewConsumer(linked, name, func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
			if !taking.Load() {
				return outbox.Permanent(errors.New("cannot apply: unknown product"))
			}
			return record(ctx, tx, evs)
		})
		require.NoError(t, err)
		ev := fakeEvents(1, 1)[0]
		taking.Store(false)
		require.NoError(t, c.Deliver(ctx, []outbox.Event{ev}))
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, name, 0)
		require.NoError(t, err)
		require.Len(t, letters, 1)
		return c, ev
	}
	exact := func(t *testing.T, c *outbox.Consumer, ev outbox.Event) {
		t.Helper()
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, c.Name(), 0)
		require.NoError(t, err)
		assert.Empty(t, letters)
		n, err := db.NewSelect().Table(outbox.TableProcessed).Where("consumer = ? AND id = ?", c.Name(), ev.ID).Count(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 1, n, "recorded as processed")
		taking.Store(true)
		require.NoError(t, c.Deliver(ctx, []outbox.Event{ev}))
		assert.Empty(t, outboxtest.Applied(t, db, c.Name()), "delivered again: not applied")
		require.NoError(t, c.Skip(ctx, ev.ID), "sent again")
	}
	c, ev := letter(t, "skip-clean")
	link.Arm(nil, false)
	require.NoError(t, c.Skip(ctx, ev.ID))
	_, statements := link.Disarm()
	t.Logf("Skip sends %d statements: %q", len(statements), statements)
	require.NotEmpty(t, statements)
	exact(t, c, ev)
	for _, p := range testenv.CutPoints(statements, nil) {
		t.Run(p.String(), func(t *testing.T) {
			c, ev := letter(t, fmt.Sprintf("skip-%t-%d", p.After, p.N))
			link.Arm(p.Match(), p.After)
			err := c.Skip(ctx, ev.ID)
			cut, _ := link.Disarm()
			require.Len(t, cut, 1)
			require.Error(t, err, "cut at %q", cut[0])
			assert.True(t, depfail.Is(err), "cut at %q: %v", cut[0], err)
			assert.NotErrorIs(t, err, outbox.ErrNotDeadLetter)
			assert.NotErrorIs(t, err, outbox.ErrResolvedOtherwise)
			require.NoError(t, c.Skip(ctx, ev.ID), "the operator's retry: the first call committed, or never did")
			exact(t, c, ev)
		})
	}
}
