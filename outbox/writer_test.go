package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
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
		{"NUL in the ID", with(func(e *outbox.Event) { e.ID = "ev\x00" }), "ID"},
		{"NUL in the key", with(func(e *outbox.Event) { e.Key = "order\x001" }), "Key"},
		{"newline in the type", with(func(e *outbox.Event) { e.Type = "order\nplaced" }), "Type"},
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

// TestWritersOfOtherAggregatesNeverWait: while a business transaction that added an event
// to one aggregate stays open (REPEATABLE READ, MariaDB's default), transactions adding
// events to other aggregates — the ones next to it in the index, new ones that sort right
// beside it, and a batch covering nearly every stream of the table — go through. They run
// with a 1 s lock wait timeout: any wait on the open transaction's locks would fail them.
func TestWritersOfOtherAggregatesNeverWait(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	ctx := context.Background()
	ev := func(key string) outbox.Event {
		return outbox.Event{Topic: "orders", Key: key, Type: "x", Payload: []byte(`{}`)}
	}
	var all []outbox.Event
	for i := range 20 {
		all = append(all, ev(fmt.Sprintf("agg-%02d", i)))
	}
	_, err := outbox.Add(ctx, db, all...)
	require.NoError(t, err)

	holder, err := db.Conn(ctx)
	require.NoError(t, err)
	defer holder.Close()
	held, err := holder.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer held.Rollback()
	_, err = outbox.Add(ctx, held, ev("agg-10"), ev("new-50"))
	require.NoError(t, err, "the open transaction holds an existing stream and a new one")

	other, err := db.Conn(ctx)
	require.NoError(t, err)
	defer other.Close()
	_, err = other.ExecContext(ctx, "SET SESSION innodb_lock_wait_timeout = 1")
	require.NoError(t, err)
	var everyOther []outbox.Event
	for i := range 20 {
		if i != 10 {
			everyOther = append(everyOther, ev(fmt.Sprintf("agg-%02d", i)))
		}
	}
	cases := map[string][]outbox.Event{
		"the existing stream before":    {ev("agg-09")},
		"the existing stream after":     {ev("agg-11")},
		"a new stream right after":      {ev("agg-10a")},
		"a new stream right before":     {ev("agg-09z")},
		"new streams around a new one":  {ev("new-49"), ev("new-51")},
		"every other stream of a table": everyOther,
	}
	for name, events := range cases {
		tx, err := other.BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = outbox.Add(ctx, tx, events...)
		if !assert.NoError(t, err, "%s: a writer of other aggregates waited on the open transaction", name) {
			_ = tx.Rollback()
			continue
		}
		require.NoError(t, tx.Commit(), name)
	}
	require.NoError(t, held.Commit())

	var seqs []struct {
		Key string `bun:"aggregate_key"`
		N   int    `bun:"n"`
		Max int    `bun:"max_seq"`
	}
	require.NoError(t, db.NewSelect().Table(outbox.TableEvents).ColumnExpr("aggregate_key, COUNT(*) AS n, MAX(seq) AS max_seq").
		GroupExpr("aggregate_key").Scan(ctx, &seqs))
	for _, s := range seqs {
		assert.Equal(t, s.N, s.Max, "stream %s numbered without gap", s.Key)
	}
}

// TestManyAggregatesConcurrentlyNoDeadlock: many business transactions, each adding events
// to a random handful of 40 aggregates given in random order, run concurrently without a
// single deadlock or lock wait timeout, and every stream ends numbered 1..n.
func TestManyAggregatesConcurrentlyNoDeadlock(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	ctx := context.Background()
	const writers, txs, aggregates = 12, 30, 40
	var mu sync.Mutex
	added := make(map[string]int)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range txs {
				var events []outbox.Event
				for _, k := range rng.Perm(aggregates)[:1+rng.IntN(5)] {
					for range 1 + rng.IntN(2) {
						events = append(events, outbox.Event{Topic: "orders", Key: fmt.Sprintf("agg-%02d", k), Type: "x", Payload: []byte(`{}`)})
					}
				}
				err := sqlutil.InTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
					_, err := outbox.Add(ctx, tx, events...)
					return err
				})
				if !assert.NoError(t, err, "no deadlock, no lock wait timeout") {
					return
				}
				mu.Lock()
				for _, ev := range events {
					added[ev.Key]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	var rows []struct {
		Key string `bun:"aggregate_key"`
		Seq int    `bun:"seq"`
	}
	require.NoError(t, db.NewSelect().Table(outbox.TableEvents).Column("aggregate_key", "seq").Order("aggregate_key", "seq").Scan(ctx, &rows))
	next := make(map[string]int)
	for _, r := range rows {
		next[r.Key]++
		require.Equal(t, next[r.Key], r.Seq, "stream %s numbered 1..n", r.Key)
	}
	assert.Equal(t, added, next, "every event added is there, once")
}

// TestHeadersArePublishedAsAddedOrRefused: every event Add accepts is published with
// exactly the headers it was given — none altered on the way through the table, none
// lost to the column's size — and one whose headers cannot be kept so is refused with
// ErrInvalidEvent, nothing written.
func TestHeadersArePublishedAsAddedOrRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		good := outbox.Event{ID: "good", Topic: "orders", Key: "k", Type: "x", Payload: []byte(`{}`),
			Headers: map[string]string{"trace": "가나다 😀", "quote": `"\`}}
		_, err := outbox.Add(ctx, db, good)
		require.NoError(t, err)
		for name, h := range map[string]map[string]string{
			"invalid UTF-8 value": {"bin": "\xff\xfe"},
			"invalid UTF-8 name":  {"\xff": "v"},
			"over 64 KiB":         {"big": strings.Repeat("a", 70_000)},
		} {
			ev := outbox.Event{ID: "bad", Topic: "orders", Key: "k", Type: "x", Payload: []byte(`{}`), Headers: h}
			_, err := outbox.Add(ctx, db, ev)
			require.ErrorIs(t, err, outbox.ErrInvalidEvent, name)
			var ee *outbox.EventError
			require.ErrorAs(t, err, &ee, name)
			assert.Equal(t, "Headers", ee.Field, name)
		}
		var log publishLog
		r, err := outbox.NewRelay(db, &log)
		require.NoError(t, err)
		relayUntilDone(t, r, db)
		got := log.snapshot()
		require.Len(t, got, 1)
		assert.Equal(t, good.Headers, got[0].Headers)
		dead, err := r.DeadLetters(ctx, 0)
		require.NoError(t, err)
		assert.Empty(t, dead)
	})
}

// TestOptionsForAnotherTypeAreRejected: an option passed to a constructor it does not
// apply to is a configuration error, not a setting silently dropped.
func TestOptionsForAnotherTypeAreRejected(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.SQLite(t))
	_, err := outbox.NewWriter(outbox.WithRetention(time.Hour))
	assert.ErrorIs(t, err, outbox.ErrInvalidConfig)
	assert.ErrorContains(t, err, "WithRetention: does not apply to a Writer")
	assert.Equal(t, "WithRetention", errcode.FieldOf(err))
	_, err = outbox.NewRelay(db, &publishLog{}, outbox.WithMaxAttempts(3))
	assert.ErrorIs(t, err, outbox.ErrInvalidConfig)
	_, err = outbox.NewCleaner(db, outbox.WithDeadLetters(outbox.NewDeadLetterTable(db)))
	assert.ErrorIs(t, err, outbox.ErrInvalidConfig)
	_, err = outbox.NewConsumer(db, "x", outboxtest.RecordingHandler("x"), outbox.WithMaxEventBytes(10))
	assert.ErrorIs(t, err, outbox.ErrInvalidConfig)
	_, err = outbox.NewConsumer(db, "x", outboxtest.RecordingHandler("x"), outbox.WithInterval(time.Second))
	assert.ErrorIs(t, err, outbox.ErrInvalidConfig)
	// Options shared by all still apply everywhere.
	_, err = outbox.NewWriter(outbox.WithClock(time.Now), outbox.WithLogger(slog.New(slog.DiscardHandler)), outbox.WithMaxEventBytes(10))
	assert.NoError(t, err)
}

// TestOptionsRefuseBadValues: every invalid option value is refused by the constructor,
// naming the option.
func TestOptionsRefuseBadValues(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.SQLite(t))
	testkit.RefusesBadOptions(t, outbox.NewWriter, map[string]outbox.Option{
		"WithMaxEventBytes: 0 is less than 1": outbox.WithMaxEventBytes(0),
		"WithClock: nil":                      outbox.WithClock(nil),
		"WithLogger: nil":                     outbox.WithLogger(nil),
	}, outbox.ErrInvalidConfig)
	testkit.RefusesBadOptions(t, func(opts ...outbox.Option) (*outbox.Relay, error) {
		return outbox.NewRelay(db, &publishLog{}, opts...)
	}, map[string]outbox.Option{
		"WithBatchSize: 0":     outbox.WithBatchSize(0),
		"WithInterval: 0s":     outbox.WithInterval(0),
		"WithBackoff: 2s..1s":  outbox.WithBackoff(2*time.Second, time.Second),
		"WithBackoff: -1s..1s": outbox.WithBackoff(-time.Second, time.Second),
		"WithObserver: nil":    outbox.WithObserver(nil),
	}, outbox.ErrInvalidConfig)
	testkit.RefusesBadOptions(t, func(opts ...outbox.Option) (*outbox.Cleaner, error) {
		return outbox.NewCleaner(db, opts...)
	}, map[string]outbox.Option{
		"WithRetention: -1s":          outbox.WithRetention(-time.Second),
		"WithProcessedRetention: -1s": outbox.WithProcessedRetention(-time.Second),
	}, outbox.ErrInvalidConfig)
	testkit.RefusesBadOptions(t, func(opts ...outbox.Option) (*outbox.Consumer, error) {
		return outbox.NewConsumer(db, "x", outboxtest.RecordingHandler("x"), opts...)
	}, map[string]outbox.Option{
		"WithMaxAttempts: 0":   outbox.WithMaxAttempts(0),
		"WithDeadLetters: nil": outbox.WithDeadLetters(nil),
	}, outbox.ErrInvalidConfig)
}

// TestStreamKeysCompareByteForByte: every stream is numbered 1, 2, 3, ... on its own, on
// every backend. MySQL's binary collations ignore trailing spaces (PAD SPACE), so the
// outbox_streams row of key "k " was the row of "k" there: the two streams shared one
// counter ("k" got 1 and 3, "k " 2 and 4: each stream with gaps a consumer takes for
// missing events), while on SQLite each had its own. Such a key is refused. A leading
// space or another case makes another stream everywhere.
func TestStreamKeysCompareByteForByte(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		ev := func(key string) outbox.Event {
			return outbox.Event{Topic: "orders", Key: key, Type: "order.placed", Payload: []byte(`{}`)}
		}
		_, err := outbox.Add(ctx, db, ev("k "))
		var ee *outbox.EventError
		require.ErrorAs(t, err, &ee, "a key ending with a space")
		assert.ErrorIs(t, err, outbox.ErrInvalidEvent)
		assert.Equal(t, "Key", ee.Field)

		seqs := map[string][]int64{}
		for range 2 {
			for _, key := range []string{"k", " k", "K"} {
				added, err := outbox.Add(ctx, db, ev(key))
				require.NoError(t, err)
				seqs[key] = append(seqs[key], added[0].Seq)
			}
		}
		assert.Equal(t, map[string][]int64{"k": {1, 2}, " k": {1, 2}, "K": {1, 2}}, seqs)
	})
}
