package outbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

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
