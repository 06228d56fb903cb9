package outbox_test

import (
	"context"
	"errors"
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

// refusingPublisher behaves like a transactional Kafka publisher with a size limit: a
// batch holding a refused event fails as a whole, the refused events with a Permanent
// cause, and, with collateral set, the others too (as when a broker rejects a whole
// partition batch); the rest with a plain one. Accepted batches are logged.
type refusingPublisher struct {
	publishLog
	mu         sync.Mutex
	refuse     map[string]bool
	collateral bool
}

func (p *refusingPublisher) Publish(ctx context.Context, events []outbox.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	failed := make(map[string]error)
	for _, ev := range events {
		if p.refuse[ev.ID] {
			failed[ev.ID] = outbox.Permanent(errors.New("message too large"))
		}
	}
	if len(failed) == 0 {
		return p.publishLog.Publish(ctx, events)
	}
	for _, ev := range events {
		if _, ok := failed[ev.ID]; !ok {
			failed[ev.ID] = errors.New("aborted with its transaction")
			if p.collateral {
				failed[ev.ID] = outbox.Permanent(errors.New("partition batch too large"))
			}
		}
	}
	return &outbox.PublishError{Failed: failed}
}

func (p *refusingPublisher) accept(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.refuse, id)
}

// seqsOf returns the sequence numbers of key's events, in the order published.
func seqsOf(events []outbox.Event, key string) []int64 {
	var out []int64
	for _, ev := range events {
		if ev.Key == key {
			out = append(out, ev.Seq)
		}
	}
	return out
}

// TestRelaySetsAsideWhatThePublisherRefuses: an event the publisher can never take is set
// aside in the outbox with its reason, a metric and the events of other streams going out
// in the same round, even when the refusal took them down with it; the events after it in
// its stream wait (and, more than a batch of them, crowd nobody out) until an operator
// skips it, after which they flow in order.
func TestRelaySetsAsideWhatThePublisherRefuses(t *testing.T) {
	for _, collateral := range []bool{false, true} {
		t.Run(fmt.Sprintf("collateral=%v", collateral), func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, db *bun.DB) {
				ctx := context.Background()
				var poisoned []outbox.Event
				for range 6 {
					evs, err := outbox.Add(ctx, db, outbox.Event{Topic: "orders", Key: "poisoned", Type: "x", Payload: []byte(`{}`)})
					require.NoError(t, err)
					poisoned = append(poisoned, evs...)
				}
				others := addEvents(t, db, "orders", 3, 4)
				bad := poisoned[1] // seq 2
				pub := &refusingPublisher{refuse: map[string]bool{bad.ID: true}, collateral: collateral}
				m := newMetrics()
				r, err := outbox.NewRelay(db, pub, outbox.WithBatchSize(4), outbox.WithObserver(m))
				require.NoError(t, err)

				for range 20 {
					_, err := r.RelayOnce(ctx)
					require.NoError(t, err, "a set-aside event is no failure of the round")
				}
				got := pub.snapshot()
				assert.Equal(t, []int64{1}, seqsOf(got, "poisoned"), "the events after the refused one wait")
				for k := range 3 {
					assert.Equal(t, []int64{1, 2, 3, 4}, seqsOf(got, fmt.Sprintf("key-%03d", k)), "other streams flow in order")
				}
				assert.Len(t, got, 1+len(others), "each event published once")
				assert.Equal(t, 1, m.get("relay_dead_lettered", "orders"))

				dead, err := r.DeadLetters(ctx, 0)
				require.NoError(t, err)
				require.Len(t, dead, 1)
				assert.Equal(t, bad.ID, dead[0].ID)
				assert.Equal(t, bad.Seq, dead[0].Seq)
				assert.Equal(t, string(bad.Payload), string(dead[0].Payload))
				assert.Contains(t, dead[0].Error, "message too large")
				assert.False(t, dead[0].At.IsZero())
				summaries, err := r.DeadLetterSummaries(ctx, 0)
				require.NoError(t, err)
				whole := dead[0]
				whole.Payload, whole.Headers = nil, nil
				assert.Equal(t, []outbox.DeadLetter{whole}, summaries, "the dead letters without payloads nor headers")
				lag, err := r.Lag(ctx)
				require.NoError(t, err)
				assert.Positive(t, lag, "the events waiting behind the dead letter count as lag")

				require.ErrorIs(t, r.Redrive(ctx, poisoned[2].ID), outbox.ErrNotDeadLetter, "a waiting event is no dead letter")
				require.ErrorIs(t, r.Skip(ctx, "no-such-event"), outbox.ErrNotDeadLetter)
				require.ErrorIs(t, r.Skip(ctx, "ev\x00"), outbox.ErrNotDeadLetter, "no event has a NUL in its ID")
				require.ErrorIs(t, r.Redrive(ctx, strings.Repeat("e", 65)), outbox.ErrNotDeadLetter)
				require.NoError(t, r.Skip(ctx, bad.ID))
				require.NoError(t, r.Skip(ctx, bad.ID), "a skip sent again after its answer was lost: done already")
				require.ErrorIs(t, r.Redrive(ctx, bad.ID), outbox.ErrResolvedOtherwise, "skipped, not to be redriven")
				relayUntilDone(t, r, db)
				assert.Equal(t, []int64{1, 3, 4, 5, 6}, seqsOf(pub.snapshot(), "poisoned"), "after the skip, the rest in order")
				dead, err = r.DeadLetters(ctx, 0)
				require.NoError(t, err)
				assert.Empty(t, dead)
				assert.Equal(t, 1, m.get("relay_dead_lettered", "orders"))
			})
		})
	}
}

// TestRelayRedriveAfterTheCauseIsFixed: a redriven dead letter is published in its place,
// then the events that waited behind it; one still refused is set aside again.
func TestRelayRedriveAfterTheCauseIsFixed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		evs := addEvents(t, db, "orders", 1, 4) // key-000 seq 1..4
		pub := &refusingPublisher{refuse: map[string]bool{evs[2].ID: true}}
		r, err := outbox.NewRelay(db, pub)
		require.NoError(t, err)
		_, err = r.RelayOnce(ctx)
		require.NoError(t, err)
		require.NoError(t, r.Redrive(ctx, evs[2].ID))
		_, err = r.RelayOnce(ctx)
		require.NoError(t, err)
		dead, err := r.DeadLetters(ctx, 0)
		require.NoError(t, err)
		require.Len(t, dead, 1, "still refused: set aside again")

		pub.accept(evs[2].ID)
		require.NoError(t, r.Redrive(ctx, evs[2].ID))
		require.NoError(t, r.Redrive(ctx, evs[2].ID), "a redrive sent again after its answer was lost: done already")
		require.ErrorIs(t, r.Skip(ctx, evs[2].ID), outbox.ErrResolvedOtherwise, "redriven, not to be skipped")
		relayUntilDone(t, r, db)
		assert.Equal(t, ids(evs), ids(pub.snapshot()), "published once each, in order")
		require.NoError(t, r.Redrive(ctx, evs[2].ID), "and once published")
		require.ErrorIs(t, r.Skip(ctx, evs[2].ID), outbox.ErrResolvedOtherwise)
		assert.Equal(t, ids(evs), ids(pub.snapshot()), "nothing published again")

		// A year later, the event itself long cleaned away: the same answers.
		cl, err := outbox.NewCleaner(db, outbox.WithClock(func() time.Time { return time.Now().AddDate(1, 0, 0) }))
		require.NoError(t, err)
		n, err := cl.CleanOnce(ctx)
		require.NoError(t, err)
		require.Equal(t, len(evs), n)
		require.NoError(t, r.Redrive(ctx, evs[2].ID), "a year later")
		require.ErrorIs(t, r.Skip(ctx, evs[2].ID), outbox.ErrResolvedOtherwise, "a year later")
		require.ErrorIs(t, r.Redrive(ctx, evs[1].ID), outbox.ErrNotDeadLetter, "never a dead letter")
		assert.Equal(t, ids(evs), ids(pub.snapshot()), "nothing published again")
	})
}

// TestRelaySetsAsideAnEventThatDoesNotDecode: a row whose stored headers are corrupt
// cannot be published; it is set aside instead of failing every round.
func TestRelaySetsAsideAnEventThatDoesNotDecode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		evs := addEvents(t, db, "orders", 2, 2)
		_, err := db.NewUpdate().Table(outbox.TableEvents).Set("headers = ?", "{oops").Where("id = ?", evs[0].ID).Exec(ctx)
		require.NoError(t, err)
		log := &publishLog{}
		r, err := outbox.NewRelay(db, log)
		require.NoError(t, err)
		_, err = r.RelayOnce(ctx)
		require.NoError(t, err)
		assert.Equal(t, []string{evs[1].ID, evs[3].ID}, ids(log.snapshot()))
		dead, err := r.DeadLetters(ctx, 0)
		require.NoError(t, err)
		require.Len(t, dead, 1)
		assert.Equal(t, evs[0].ID, dead[0].ID)
		assert.Contains(t, dead[0].Error, "decoding headers")
	})
}

// TestAddRejectsEventsOverTheSizeLimit: an event larger than the writer's limit fails with
// ErrEventTooLarge (an ErrInvalidEvent) and nothing is written; the limit counts key,
// payload and headers; the default is DefaultMaxEventBytes.
func TestAddRejectsEventsOverTheSizeLimit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		w, err := outbox.NewWriter(outbox.WithMaxEventBytes(100))
		require.NoError(t, err)
		fits := outbox.Event{Topic: "orders", Key: "k", Type: "x", Payload: []byte(`"` + strings.Repeat("a", 97) + `"`)}
		require.Equal(t, 100, fits.Size())
		_, err = w.Add(ctx, db, fits)
		require.NoError(t, err)

		withHeader := fits
		withHeader.Headers = map[string]string{"h": ""}
		tooLong := fits
		tooLong.Payload = []byte(`"` + strings.Repeat("a", 98) + `"`)
		for name, ev := range map[string]outbox.Event{"payload": tooLong, "header": withHeader} {
			_, err := w.Add(ctx, db, fits, ev)
			require.ErrorIs(t, err, outbox.ErrEventTooLarge, name)
			require.ErrorIs(t, err, outbox.ErrInvalidEvent, name)
			var ee *outbox.EventError
			require.ErrorAs(t, err, &ee, name)
			assert.Equal(t, 1, ee.Index, name)
		}
		huge := outbox.Event{Topic: "orders", Key: "k", Type: "x", Payload: []byte(`"` + strings.Repeat("a", outbox.DefaultMaxEventBytes) + `"`)}
		_, err = outbox.Add(ctx, db, huge)
		require.ErrorIs(t, err, outbox.ErrEventTooLarge, "the default limit")
		n, err := db.NewSelect().Table(outbox.TableEvents).Count(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 1, n, "nothing written by the rejected calls")
		_, err = outbox.NewWriter(outbox.WithMaxEventBytes(0))
		require.ErrorIs(t, err, outbox.ErrInvalidConfig)
	})
}

// TestCreateSchemaAddsTheDeadLetterColumns: an outbox_events table from before dead
// letters gets dead_at and dead_reason.
func TestCreateSchemaAddsTheDeadLetterColumns(t *testing.T) {
	for _, b := range testenv.Databases() {
		t.Run(b.Name, func(t *testing.T) {
			db := b.Open(t)
			ctx := context.Background()
			_, err := db.ExecContext(ctx, `CREATE TABLE outbox_events (
				pos INTEGER PRIMARY KEY, id VARCHAR(64) NOT NULL, topic VARCHAR(249) NOT NULL,
				aggregate_key VARCHAR(128) NOT NULL, seq BIGINT NOT NULL, event_type VARCHAR(128) NOT NULL,
				payload BLOB NOT NULL, headers TEXT NULL, created_at TIMESTAMP NOT NULL, sent_at TIMESTAMP NULL)`)
			require.NoError(t, err)
			require.NoError(t, outbox.CreateSchema(ctx, db))
			require.NoError(t, outbox.CreateSchema(ctx, db), "idempotent")
			_, err = db.ExecContext(ctx, "SELECT dead_at, dead_reason FROM outbox_events")
			require.NoError(t, err)
		})
	}
}

// TestCreateSchemaUpgradesTheDeadLetterTable: an outbox_dead_letters table from before
// letters were stored altered gets the altered column and, on MySQL, headers as large as
// a Kafka message's; the letters it held are still listed and re-driven.
func TestCreateSchemaUpgradesTheDeadLetterTable(t *testing.T) {
	for _, b := range testenv.Databases() {
		t.Run(b.Name, func(t *testing.T) {
			db := b.Open(t)
			ctx := context.Background()
			_, err := db.ExecContext(ctx, `CREATE TABLE outbox_dead_letters (
				consumer VARCHAR(64) NOT NULL, id VARCHAR(64) NOT NULL, topic VARCHAR(249) NOT NULL,
				aggregate_key VARCHAR(128) NOT NULL, seq BIGINT NOT NULL, event_type VARCHAR(128) NOT NULL,
				payload BLOB NOT NULL, headers TEXT NULL, created_at TIMESTAMP NOT NULL,
				last_error TEXT NOT NULL, attempts INT NOT NULL, dead_at TIMESTAMP NOT NULL,
				PRIMARY KEY (consumer, id))`)
			require.NoError(t, err)
			_, err = db.ExecContext(ctx, `INSERT INTO outbox_dead_letters VALUES
				('c', 'old', 'orders', 'k', 1, 'x', '{}', NULL, '2026-01-02 03:04:05', 'boom', 3, '2026-01-02 03:04:05')`)
			require.NoError(t, err)
			outboxtest.Prepare(t, db) // CreateSchema, twice

			table := outbox.NewDeadLetterTable(db)
			big := outbox.DeadLetter{Event: outbox.Event{ID: "big", Topic: "orders", Key: "k", Type: "x", Payload: []byte(`{}`),
				Headers: map[string]string{"h": strings.Repeat("v", 100<<10)}, CreatedAt: time.Now()}, Consumer: "c", Error: "boom", At: time.Now()}
			require.NoError(t, table.DeadLetter(ctx, big))
			letters, err := table.List(ctx, "c", 0)
			require.NoError(t, err)
			require.Len(t, letters, 2)
			assert.Equal(t, "old", letters[0].ID)
			assert.Empty(t, letters[0].Altered)
			assert.Equal(t, big.Headers, letters[1].Headers, "stored whole")
			assert.Empty(t, letters[1].Altered)

			c, err := outbox.NewConsumer(db, "c", outboxtest.RecordingHandler("c"))
			require.NoError(t, err)
			applied, err := c.Redrive(ctx, 0)
			require.NoError(t, err)
			assert.Equal(t, 2, applied)
		})
	}
}

// TestRedriveAndSkipRacingSeveralRelays runs three relays on MariaDB (FOR UPDATE SKIP
// LOCKED) while writers keep adding events to the same streams and an operator redrives
// (after fixing the cause) or skips each dead letter as soon as it appears. In the end
// every event is published exactly once, in its stream's order, except the skipped ones,
// which never are.
func TestRedriveAndSkipRacingSeveralRelays(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const keys, perKey = 6, 24
	id := func(k, i int) string { return fmt.Sprintf("key-%d-%02d", k, i) }
	pub := &refusingPublisher{refuse: map[string]bool{}}
	skipped := map[string]bool{}
	for k := range keys {
		for _, i := range []int{3, 4, 15} { // seq i+1: two in a row early, one among the late writes
			pub.refuse[id(k, i)] = true
			if k%2 == 1 && i != 4 {
				skipped[id(k, i)] = true
			}
		}
	}
	add := func(from, to int) {
		for i := from; i < to; i++ {
			for k := range keys {
				_, err := outbox.Add(ctx, db, outbox.Event{ID: id(k, i), Topic: "orders", Key: fmt.Sprintf("key-%d", k),
					Type: "test.happened", Payload: payload(map[string]int{"i": i})})
				if err != nil && ctx.Err() == nil {
					t.Errorf("add %s: %v", id(k, i), err)
				}
			}
		}
	}
	refused := len(pub.refuse)
	add(0, perKey/2)

	var relays []*outbox.Relay
	var wg sync.WaitGroup
	for range 3 {
		r, err := outbox.NewRelay(db, pub, outbox.WithBatchSize(5), outbox.WithInterval(2*time.Millisecond),
			outbox.WithBackoff(time.Millisecond, 5*time.Millisecond))
		require.NoError(t, err)
		relays = append(relays, r)
		wg.Go(func() { _ = r.Run(ctx) })
	}
	var writer sync.WaitGroup
	writer.Go(func() { add(perKey/2, perKey) })
	// The operator: redrive (cause fixed) or skip each dead letter once it shows up.
	handled := map[string]bool{}
	deadline := time.Now().Add(2 * time.Minute)
	for len(handled) < refused && time.Now().Before(deadline) {
		dead, err := relays[0].DeadLetters(ctx, 0)
		require.NoError(t, err)
		for _, dl := range dead {
			r := relays[len(handled)%len(relays)]
			if skipped[dl.ID] {
				require.NoError(t, r.Skip(ctx, dl.ID))
			} else {
				pub.accept(dl.ID)
				require.NoError(t, r.Redrive(ctx, dl.ID))
			}
			handled[dl.ID] = true
			// Each sent again, as after a lost answer, through another relay: the same
			// resolution is done already, the other one refused.
			again := relays[(len(handled)+1)%len(relays)]
			same, other := again.Redrive, again.Skip
			if skipped[dl.ID] {
				same, other = again.Skip, again.Redrive
			}
			require.NoError(t, same(ctx, dl.ID), "resolved once")
			require.ErrorIs(t, other(ctx, dl.ID), outbox.ErrResolvedOtherwise, "resolved once")
		}
		time.Sleep(3 * time.Millisecond)
	}
	require.Len(t, handled, refused, "every refused event was set aside")
	writer.Wait()
	require.Eventually(t, outboxtest.Drained(db), 2*time.Minute, 10*time.Millisecond, "the outbox drained")
	cancel()
	wg.Wait()

	got := pub.snapshot()
	for k := range keys {
		var want []string
		for i := range perKey {
			if !skipped[id(k, i)] {
				want = append(want, id(k, i))
			}
		}
		var have []string
		for _, ev := range got {
			if ev.Key == fmt.Sprintf("key-%d", k) {
				have = append(have, ev.ID)
				assert.Equal(t, ev.ID, id(k, int(ev.Seq)-1))
			}
		}
		assert.Equal(t, want, have, "key-%d: published once each, in order, the skipped never", k)
	}
}

// TestRelayResolvesOnlyTheDeadLetterNamed: Redrive and Skip compare the ID byte for byte on
// every backend. MySQL's collations ignore trailing spaces, so Skip(id+" ") found and
// skipped the dead letter id there (an operator's stray space giving up on an event for
// good), while on SQLite it was no dead letter. No event has such an ID: ErrNotDeadLetter,
// nothing changed.
func TestRelayResolvesOnlyTheDeadLetterNamed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		evs := addEvents(t, db, "orders", 1, 2) // key-000 seq 1..2
		pub := &refusingPublisher{refuse: map[string]bool{evs[0].ID: true}}
		r, err := outbox.NewRelay(db, pub)
		require.NoError(t, err)
		_, err = r.RelayOnce(ctx)
		require.NoError(t, err)

		require.ErrorIs(t, r.Skip(ctx, evs[0].ID+" "), outbox.ErrNotDeadLetter)
		require.ErrorIs(t, r.Redrive(ctx, evs[0].ID+" "), outbox.ErrNotDeadLetter)
		dead, err := r.DeadLetters(ctx, 0)
		require.NoError(t, err)
		require.Len(t, dead, 1, "still set aside")
		assert.Equal(t, evs[0].ID, dead[0].ID)
		_, err = r.RelayOnce(ctx)
		require.NoError(t, err)
		assert.Empty(t, pub.snapshot(), "the event behind it still waits")

		pub.accept(evs[0].ID)
		require.NoError(t, r.Redrive(ctx, evs[0].ID), "its own ID resolves it")
		relayUntilDone(t, r, db)
		assert.Equal(t, ids(evs), ids(pub.snapshot()))
	})
}
