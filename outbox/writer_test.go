package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

func TestAddRejectsInvalidEvents(t *testing.T) {
	good := outbox.Event{Topic: "orders", Key: "order-1", Type: "order.placed", Payload: []byte(`{"total":1000}`)}
	with := func(f func(*outbox.Event)) outbox.Event {
		ev := good
		f(&ev)
		return ev
	}
	cases := []struct {
		name  string
		ev    outbox.Event
		field string
	}{
		{"empty topic", with(func(e *outbox.Event) { e.Topic = "" }), "Topic"},
		{"illegal topic", with(func(e *outbox.Event) { e.Topic = "orders events" }), "Topic"},
		{"long topic", with(func(e *outbox.Event) { e.Topic = strings.Repeat("t", 250) }), "Topic"},
		{"empty key", with(func(e *outbox.Event) { e.Key = "" }), "Key"},
		{"long key", with(func(e *outbox.Event) { e.Key = strings.Repeat("k", 129) }), "Key"},
		{"empty type", with(func(e *outbox.Event) { e.Type = "" }), "Type"},
		{"payload not JSON", with(func(e *outbox.Event) { e.Payload = []byte("{oops") }), "Payload"},
		{"empty payload", with(func(e *outbox.Event) { e.Payload = nil }), "Payload"},
		{"long ID", with(func(e *outbox.Event) { e.ID = strings.Repeat("i", 65) }), "ID"},
		{"reserved header", with(func(e *outbox.Event) { e.Headers = map[string]string{"outbox-id": "x"} }), "Headers"},
		{"empty header name", with(func(e *outbox.Event) { e.Headers = map[string]string{"": "x"} }), "Headers"},
	}
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		for _, c := range cases {
			_, err := outbox.Add(ctx, db, good, c.ev)
			require.ErrorIs(t, err, outbox.ErrInvalidEvent, c.name)
			var ee *outbox.EventError
			require.ErrorAs(t, err, &ee, c.name)
			assert.Equal(t, 1, ee.Index, c.name)
			assert.Equal(t, c.field, ee.Field, c.name)
		}
		_, err := outbox.Add(ctx, db, outbox.Event{ID: "same", Topic: "t", Key: "k", Type: "x", Payload: []byte("1")},
			outbox.Event{ID: "same", Topic: "t", Key: "k", Type: "x", Payload: []byte("2")})
		require.ErrorIs(t, err, outbox.ErrDuplicateEvent)

		n, err := db.NewSelect().Table(outbox.TableEvents).Count(ctx)
		require.NoError(t, err)
		assert.Zero(t, n, "a rejected call writes nothing, not even its valid events")
		n, err = db.NewSelect().Table(outbox.TableStreams).Count(ctx)
		require.NoError(t, err)
		assert.Zero(t, n, "nor reserves sequence numbers")
	})
}

func TestAddAssignsIDsTimesAndSequences(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		clk := newClock()
		w, err := outbox.NewWriter(outbox.WithClock(clk.Now))
		require.NoError(t, err)
		evs, err := w.Add(ctx, db,
			outbox.Event{Topic: "orders", Key: "o-1", Type: "order.placed", Payload: []byte(`{}`), Headers: map[string]string{"trace": "abc"}},
			outbox.Event{Topic: "orders", Key: "o-2", Type: "order.placed", Payload: []byte(`{}`)},
			outbox.Event{Topic: "orders", Key: "o-1", Type: "order.paid", Payload: []byte(`{}`)},
			outbox.Event{Topic: "payments", Key: "o-1", Type: "payment.completed", Payload: []byte(`{}`)},
		)
		require.NoError(t, err)
		assert.Equal(t, []int64{1, 1, 2, 1}, []int64{evs[0].Seq, evs[1].Seq, evs[2].Seq, evs[3].Seq},
			"a stream is (topic, key): numbered in the order given")
		for _, ev := range evs {
			id, err := uuid.Parse(ev.ID)
			require.NoError(t, err)
			assert.Equal(t, uuid.Version(7), id.Version(), "IDs are time-ordered UUIDv7")
			assert.Equal(t, clk.Now(), ev.CreatedAt)
		}
		more, err := w.Add(ctx, db, outbox.Event{Topic: "orders", Key: "o-1", Type: "order.shipped", Payload: []byte(`{}`)})
		require.NoError(t, err)
		assert.EqualValues(t, 3, more[0].Seq, "numbering continues across transactions")

		// What the relay reads back is what Add returned.
		var got []outbox.Event
		pub := outbox.PublisherFunc(func(_ context.Context, events []outbox.Event) error {
			got = append(got, events...)
			return nil
		})
		r, err := outbox.NewRelay(db, pub)
		require.NoError(t, err)
		relayUntilDone(t, r, db)
		assert.Equal(t, append(evs, more...), got)
	})
}

// TestRolledBackEventsNeverAppear: events of a rolled-back transaction are never published
// and use up no sequence number; events of a committed one appear only after the commit.
func TestRolledBackEventsNeverAppear(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		var got []outbox.Event
		r, err := outbox.NewRelay(db, outbox.PublisherFunc(func(_ context.Context, events []outbox.Event) error {
			got = append(got, events...)
			return nil
		}))
		require.NoError(t, err)

		errRollback := errors.New("business rule failed")
		err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			_, err := outbox.Add(ctx, tx, outbox.Event{Topic: "orders", Key: "o-1", Type: "order.placed", Payload: []byte(`{"n":1}`)})
			require.NoError(t, err)
			return errRollback
		})
		require.ErrorIs(t, err, errRollback)
		n, err := r.RelayOnce(ctx)
		require.NoError(t, err)
		assert.Zero(t, n)

		var committed []outbox.Event
		require.NoError(t, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			committed, err = outbox.Add(ctx, tx, outbox.Event{Topic: "orders", Key: "o-1", Type: "order.placed", Payload: []byte(`{"n":2}`)})
			return err
		}))
		relayUntilDone(t, r, db)
		require.Len(t, got, 1)
		assert.Equal(t, committed[0].ID, got[0].ID)
		assert.JSONEq(t, `{"n":2}`, string(got[0].Payload))
		assert.EqualValues(t, 1, got[0].Seq, "the rolled-back event's sequence number was not used up")
	})
}

// TestAddDuplicateIDKeepsCallersTransaction: a caller-supplied ID makes Add idempotent; the
// second Add fails with ErrDuplicateEvent under a savepoint, and the caller's transaction
// goes on and commits its other work.
func TestAddDuplicateIDKeepsCallersTransaction(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		ev := outbox.Event{ID: "order-1-placed", Topic: "orders", Key: "order-1", Type: "order.placed", Payload: []byte(`{}`)}
		_, err := outbox.Add(ctx, db, ev)
		require.NoError(t, err)
		require.NoError(t, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			_, err := outbox.Add(ctx, tx, outbox.Event{Topic: "orders", Key: "order-1", Type: "x", Payload: []byte(`1`)}, ev)
			var ee *outbox.EventError
			require.ErrorAs(t, err, &ee)
			assert.ErrorIs(t, err, outbox.ErrDuplicateEvent)
			assert.Equal(t, 1, ee.Index)
			_, err = outbox.Add(ctx, tx, outbox.Event{Topic: "orders", Key: "order-1", Type: "order.paid", Payload: []byte(`{}`)})
			return err
		}))
		var seqs []int64
		require.NoError(t, db.NewSelect().Table(outbox.TableEvents).Column("seq").Order("seq").Scan(ctx, &seqs))
		assert.Equal(t, []int64{1, 2}, seqs, "the failed Add took no sequence number and wrote no event")
	})
}

// TestConcurrentWritersToOneAggregate: writers to one stream are serialised by its
// sequence row; the committed events are numbered 1..N without gap or repeat, and
// concurrent rollbacks leave no hole.
func TestConcurrentWritersToOneAggregate(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	ctx := context.Background()
	const writers, perWriter = 16, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	committed := 0
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				rollback := (w+i)%5 == 0
				err := sqlutil.InTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
					_, err := outbox.Add(ctx, tx,
						outbox.Event{Topic: "orders", Key: "hot", Type: "x", Payload: []byte(`{}`)},
						outbox.Event{Topic: "orders", Key: fmt.Sprintf("cold-%d", w), Type: "x", Payload: []byte(`{}`)},
					)
					if err == nil && rollback {
						return errRollbackOnPurpose
					}
					return err
				})
				if rollback {
					assert.ErrorIs(t, err, errRollbackOnPurpose)
					continue
				}
				if assert.NoError(t, err) {
					mu.Lock()
					committed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	var seqs []int64
	require.NoError(t, db.NewSelect().Table(outbox.TableEvents).Column("seq").Where("aggregate_key = 'hot'").Order("pos").Scan(ctx, &seqs))
	require.Len(t, seqs, committed)
	for i, s := range seqs {
		require.EqualValues(t, i+1, s, "hot stream numbered without gap, in commit order")
	}
}

var errRollbackOnPurpose = errors.New("rolled back on purpose")
