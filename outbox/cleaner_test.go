package outbox_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

// TestCleanerDeletesOnlyOldSentEventsInBatches: sent events past the retention go, in
// DELETEs of at most the batch size; newer sent events and unsent events of any age stay.
// Processed records past their own retention go too.
func TestCleanerDeletesOnlyOldSentEventsInBatches(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		clk := newClock()
		w, err := outbox.NewWriter(outbox.WithClock(clk.Now))
		require.NoError(t, err)
		add := func(topic string, n int) {
			for range n {
				_, err := w.Add(ctx, db, outbox.Event{Topic: topic, Key: "k", Type: "x", Payload: []byte(`{}`)})
				require.NoError(t, err)
			}
		}
		// The publisher refuses topic "stuck": those events stay unsent however old.
		r, err := outbox.NewRelay(db, outbox.PublisherFunc(func(_ context.Context, events []outbox.Event) error {
			failed := map[string]error{}
			for _, ev := range events {
				if ev.Topic == "stuck" {
					failed[ev.ID] = errors.New("refused")
				}
			}
			if len(failed) > 0 {
				return &outbox.PublishError{Failed: failed}
			}
			return nil
		}), outbox.WithClock(clk.Now))
		require.NoError(t, err)
		add("stuck", 2)
		add("orders", 10)
		_, _ = r.RelayOnce(ctx) // sends the 10 at t0
		c, err := outbox.NewConsumer(db, "c", outboxtest.RecordingHandler("c"), outbox.WithClock(clk.Now))
		require.NoError(t, err)
		_, err = c.Apply(ctx, fakeEvents(4, 1))
		require.NoError(t, err)

		clk.Advance(25 * time.Hour)
		add("orders", 3)
		_, _ = r.RelayOnce(ctx) // sends the 3 at t0+25h
		require.Equal(t, 2, outboxtest.Unsent(t, db))

		m := newMetrics()
		qc := &queryCounter{}
		db = db.WithQueryHook(qc)
		qc.reset("DELETE outbox_events")
		cl, err := outbox.NewCleaner(db, outbox.WithClock(clk.Now), outbox.WithRetention(24*time.Hour),
			outbox.WithProcessedRetention(48*time.Hour), outbox.WithBatchSize(3), outbox.WithObserver(m))
		require.NoError(t, err)
		n, err := cl.CleanOnce(ctx)
		require.NoError(t, err)
		assert.Equal(t, 10, n)
		assert.Equal(t, 4, qc.get("DELETE outbox_events"), "10 rows in batches of 3")
		assert.Equal(t, 10, m.get("cleaned", outbox.TableEvents))

		var left []struct {
			Topic  string     `bun:"topic"`
			SentAt *time.Time `bun:"sent_at"`
		}
		require.NoError(t, db.NewSelect().Table(outbox.TableEvents).Column("topic", "sent_at").Order("pos").Scan(ctx, &left))
		require.Len(t, left, 5)
		assert.Equal(t, "stuck", left[0].Topic)
		assert.Nil(t, left[0].SentAt, "an unsent event is never deleted")
		assert.Nil(t, left[1].SentAt)
		for _, l := range left[2:] {
			assert.Equal(t, "orders", l.Topic)
		}
		processed, err := db.NewSelect().Table(outbox.TableProcessed).Count(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 4, processed, "processed records are 25h old, kept for 48h")

		clk.Advance(25 * time.Hour)
		n, err = cl.CleanOnce(ctx)
		require.NoError(t, err)
		assert.Equal(t, 3+4, n, "the three newer sent events and the processed records")
		assert.Equal(t, 4, m.get("cleaned", outbox.TableProcessed))
		assert.Equal(t, 2, outboxtest.Unsent(t, db))
		n, err = cl.CleanOnce(ctx)
		require.NoError(t, err)
		assert.Zero(t, n)
	})
}

// TestCleanerDeletesLeasesOfDeliveriesThatDied: deliveries that die under the handler
// leave their leases (dieUnder); an event never delivered again keeps its lease until the
// processed records' retention has passed, then the Cleaner deletes it. A lease taken
// since stays.
func TestCleanerDeletesLeasesOfDeliveriesThatDied(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		clk := newClock()
		events := fakeEvents(3, 3)
		dieUnder(t, db, "c", events[0], 1, outbox.WithClock(clk.Now))
		dieUnder(t, db, "c", events[1], 1, outbox.WithClock(clk.Now))
		clk.Advance(47 * time.Hour)
		dieUnder(t, db, "c", events[2], 1, outbox.WithClock(clk.Now))
		require.Equal(t, 3, leasesOf(t, db, "c"))

		cl, err := outbox.NewCleaner(db, outbox.WithClock(clk.Now), outbox.WithProcessedRetention(48*time.Hour))
		require.NoError(t, err)
		n, err := cl.CleanOnce(ctx)
		require.NoError(t, err)
		assert.Zero(t, n, "47 hours old: kept for 48")
		clk.Advance(2 * time.Hour)
		m := newMetrics()
		cl, err = outbox.NewCleaner(db, outbox.WithClock(clk.Now), outbox.WithProcessedRetention(48*time.Hour), outbox.WithObserver(m))
		require.NoError(t, err)
		n, err = cl.CleanOnce(ctx)
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		assert.Equal(t, 2, m.get("cleaned", outbox.TableInflight))
		assert.Equal(t, 1, leasesOf(t, db, "c"), "the lease taken 2 hours ago stays")
	})
}

// TestCleanerKeepsTheRecordOfAnEventStillDeadLettered: an event dead-lettered, then
// delivered again and applied (its offset not committed before a restart, a relay's
// duplicate) stays in the dead letters, which are kept for good; Redrive finds it applied
// by its processed record. The Cleaner must not delete that record after the processed
// records' retention: an operator's Redrive any time later would apply the event twice.
func TestCleanerKeepsTheRecordOfAnEventStillDeadLettered(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		clk := newClock()
		events := fakeEvents(2, 1)
		var failing atomic.Bool
		failing.Store(true)
		record := outboxtest.RecordingHandler("c")
		c, err := outbox.NewConsumer(db, "c", func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
			for _, ev := range evs {
				if ev.ID == events[0].ID && failing.Load() {
					return outbox.Permanent(errors.New("unknown product"))
				}
			}
			return record(ctx, tx, evs)
		}, outbox.WithClock(clk.Now))
		require.NoError(t, err)
		require.NoError(t, c.Deliver(ctx, events))
		require.Equal(t, events[0].ID, onlyDeadLetter(t, db).ID)

		failing.Store(false)
		require.NoError(t, c.Deliver(ctx, events[:1]), "delivered again: applied now")
		require.Len(t, outboxtest.Applied(t, db, "c"), 2)
		require.Equal(t, events[0].ID, onlyDeadLetter(t, db).ID, "still listed")

		clk.Advance(49 * time.Hour)
		cl, err := outbox.NewCleaner(db, outbox.WithClock(clk.Now), outbox.WithProcessedRetention(48*time.Hour))
		require.NoError(t, err)
		n, err := cl.CleanOnce(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, n, "the record of the other event only")

		_, err = c.Redrive(ctx, 0)
		require.NoError(t, err)
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, "c", 0)
		require.NoError(t, err)
		assert.Empty(t, letters, "found applied: removed")
		applied := map[string]int{}
		for _, r := range outboxtest.Applied(t, db, "c") {
			applied[r.EventID]++
		}
		assert.Equal(t, map[string]int{events[0].ID: 1, events[1].ID: 1}, applied, "each event applied once")

		n, err = cl.CleanOnce(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, n, "the letter gone, its record goes too")
	})
}
