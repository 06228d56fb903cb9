package redisinventory_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// newDurable returns a journaled backend on a MySQL database and a Redis database of the
// test's own, healed (built from the empty journal), with both.
func newDurable(tb testing.TB) (*redisinventory.Durable, *redis.Client, *bun.DB) {
	tb.Helper()
	ctx := context.Background()
	db, rdb := testenv.MySQL(tb), testenv.Redis(tb)
	require.NoError(tb, redisinventory.CreateJournal(ctx, db))
	d := testkit.Must(redisinventory.NewDurable(rdb, db))(tb)
	healed, err := d.Heal(ctx)
	require.NoError(tb, err)
	require.True(tb, healed, "a new journal's generation is built at the first heal")
	return d, rdb, db
}

// lines is one line of sku.
func line(sku string, qty int64) []inventory.Line { return []inventory.Line{{SKU: sku, Qty: qty}} }

// setStock sets sku's stock on hand and buyer limit (0: none).
func setStock(t *testing.T, inv *inventory.Inventory, sku string, onHand, buyerLimit int64) {
	t.Helper()
	_, err := inv.SetStock(context.Background(), inventory.StockSetting{SKU: sku, OnHand: onHand, BuyerLimit: buyerLimit})
	require.NoError(t, err)
}

func wantStock(t *testing.T, inv *inventory.Inventory, sku string, onHand, available, sold int64) {
	t.Helper()
	st, err := inv.Stock(context.Background(), sku)
	require.NoError(t, err)
	assert.Equal(t, [3]int64{onHand, available, sold}, [3]int64{st.OnHand, st.Available, st.Sold}, "%s: on hand, available, sold", sku)
}

func requireRebuilding(t *testing.T, err error) {
	t.Helper()
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	var u *errcode.UnavailableError
	require.True(t, errors.As(err, &u))
	assert.Equal(t, redisinventory.DependencyRebuilding, u.Dependency)
	assert.Equal(t, redisinventory.RebuildRetryAfter, u.RetryAfter)
}

// TestDurableLoss: Redis loses everything; every operation fails closed (503-able, never
// "unknown SKU" nor "out of stock"); a heal rebuilds it exactly from the journal, and the
// reservations made before the loss can still be committed, released and returned.
func TestDurableLoss(t *testing.T) {
	ctx := context.Background()
	d, rdb, _ := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "drop", 10, 2)
	setStock(t, inv, "tee", 10, 0)
	_, err := inv.Adjust(ctx, inventory.Adjustment{ID: "restock-1", SKU: "tee", Delta: 3, Reason: "restock"})
	require.NoError(t, err)
	for i, id := range []string{"paid", "live", "returned", "released"} {
		_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: []inventory.Line{{SKU: "drop", Qty: 1}, {SKU: "tee", Qty: int64(i + 1)}},
			BuyerID: "u-" + id, TTL: time.Hour})
		require.NoError(t, err)
	}
	require.NoError(t, inv.Commit(ctx, "paid"))
	require.NoError(t, inv.Commit(ctx, "returned"))
	require.NoError(t, inv.Return(ctx, "returned"))
	require.NoError(t, inv.Release(ctx, "released"))
	wantStock(t, inv, "drop", 9, 8, 1)
	wantStock(t, inv, "tee", 12, 10, 1)

	require.NoError(t, rdb.FlushDB(ctx).Err())
	_, err = inv.Stock(ctx, "drop")
	requireRebuilding(t, err)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "new", Lines: line("drop", 1), BuyerID: "u-new"})
	requireRebuilding(t, err)
	_, err = inv.SetStock(ctx, inventory.StockSetting{SKU: "drop", OnHand: 100})
	requireRebuilding(t, err)
	_, err = inv.Adjust(ctx, inventory.Adjustment{ID: "restock-2", SKU: "tee", Delta: 1, Reason: "restock"})
	requireRebuilding(t, err)
	require.ErrorIs(t, inv.Commit(ctx, "live"), errcode.ErrUnavailable)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "new", Lines: line("drop", 1), BuyerID: "u-new"})
	requireRebuilding(t, err)

	healed, err := d.Heal(ctx)
	require.NoError(t, err)
	require.True(t, healed)
	wantStock(t, inv, "drop", 9, 8, 1)
	wantStock(t, inv, "tee", 13, 11, 1) // with restock-2: the journal recorded it, its caller got a 503
	healed, err = d.Heal(ctx)
	require.NoError(t, err)
	assert.False(t, healed, "a healthy Redis is left alone")

	// The reservations survive: the live one can be committed, the paid one returned, the
	// returned one stays returned, and buyer limits still count.
	require.NoError(t, inv.Commit(ctx, "live"))
	wantStock(t, inv, "drop", 8, 8, 2)
	require.NoError(t, inv.Return(ctx, "paid"))
	require.NoError(t, inv.Return(ctx, "paid"))
	require.NoError(t, inv.Return(ctx, "returned"))
	wantStock(t, inv, "drop", 9, 9, 1)
	wantStock(t, inv, "tee", 12, 12, 2)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "greedy", Lines: line("drop", 2), BuyerID: "u-live"})
	require.ErrorIs(t, err, inventory.ErrBuyerLimitExceeded)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "released", Lines: []inventory.Line{{SKU: "drop", Qty: 1}, {SKU: "tee", Qty: 4}},
		BuyerID: "u-released", TTL: time.Hour})
	require.ErrorIs(t, err, inventory.ErrReservationReleased)

	// The restock recorded while Redis was away counts once: its retry changes nothing.
	_, err = inv.Adjust(ctx, inventory.Adjustment{ID: "restock-2", SKU: "tee", Delta: 1, Reason: "restock"})
	require.NoError(t, err)
	wantStock(t, inv, "tee", 12, 12, 2)

	// A SKU key lost alone (eviction, a partial restore) is noticed and healed too.
	require.NoError(t, rdb.Del(ctx, "{inventory}:stock:tee").Err())
	_, err = inv.Stock(ctx, "tee")
	requireRebuilding(t, err)
	_, err = d.Heal(ctx)
	require.NoError(t, err)
	wantStock(t, inv, "tee", 12, 12, 2)
	_, err = inv.Stock(ctx, "unknown")
	require.ErrorIs(t, err, inventory.ErrUnknownSKU)
}

// TestDurableAdjustPastMaxOnHand: the journal refuses a positive Adjust that would take the
// on-hand count (base − committed units) past MaxOnHand, before Redis sees it: the refused
// adjustment leaves no journal row and the base unchanged, an accepted one up to exactly
// the limit counts sold units out, and a rebuild from the journal gives the same stock.
func TestDurableAdjustPastMaxOnHand(t *testing.T) {
	ctx := context.Background()
	d, _, db := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	const maxOnHand = int64(inventory.MaxOnHand)
	journal := func(id string) (rows int, base int64) {
		t.Helper()
		require.NoError(t, db.QueryRowContext(ctx, `SELECT COUNT(*) FROM inventory_journal_adjustments WHERE id = ?`, id).Scan(&rows))
		require.NoError(t, db.QueryRowContext(ctx, `SELECT base FROM inventory_journal_stock WHERE sku = 'big'`).Scan(&base))
		return rows, base
	}
	refused := func(id string, delta int64) {
		t.Helper()
		_, err := inv.Adjust(ctx, inventory.Adjustment{ID: id, SKU: "big", Delta: delta, Reason: "restock"})
		require.ErrorIs(t, err, inventory.ErrInvalidQuantity)
		var ve *inventory.ValidationError
		require.ErrorAs(t, err, &ve)
	}

	setStock(t, inv, "big", maxOnHand-10, 0)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "paid", Lines: line("big", 3), TTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, inv.Commit(ctx, "paid"))
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "live", Lines: line("big", 2), TTL: time.Hour})
	require.NoError(t, err)
	wantStock(t, inv, "big", maxOnHand-13, maxOnHand-15, 3)

	refused("adj-1", 14)
	rows, base := journal("adj-1")
	assert.Equal(t, 0, rows, "a refused adjustment leaves no journal row")
	assert.Equal(t, maxOnHand-10, base)
	wantStock(t, inv, "big", maxOnHand-13, maxOnHand-15, 3)

	// Up to exactly the limit: the base passes MaxOnHand by the units sold.
	_, err = inv.Adjust(ctx, inventory.Adjustment{ID: "adj-2", SKU: "big", Delta: 13, Reason: "restock"})
	require.NoError(t, err)
	rows, base = journal("adj-2")
	assert.Equal(t, 1, rows)
	assert.Equal(t, maxOnHand+3, base)
	wantStock(t, inv, "big", maxOnHand, maxOnHand-2, 3)
	refused("adj-3", 1)
	rows, base = journal("adj-3")
	assert.Equal(t, [2]int64{0, maxOnHand + 3}, [2]int64{int64(rows), base})

	_, err = d.Rebuild(ctx)
	require.NoError(t, err)
	wantStock(t, inv, "big", maxOnHand, maxOnHand-2, 3)
}

// TestDurableRebuildWaitsForWriters closes the race of a reservation made in Redis under the
// old generation whose journal row commits after Redis was lost: the rebuild waits for it
// (its exclusive lock on the generation queues behind the writer's shared one), so the
// rebuilt Redis holds its units and nothing is oversold.
func TestDurableRebuildWaitsForWriters(t *testing.T) {
	ctx := context.Background()
	d, rdb, db := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "last", 1, 0)

	inRedis, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(proceed) }) }
	t.Cleanup(release) // a failing test lets the writer finish
	redisinventory.SetHook(d, func(op, id string) {
		if op == "reserve" && id == "slow" {
			close(inRedis)
			<-proceed
		}
	})
	reserved := make(chan error, 1)
	go func() {
		_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "slow", Lines: line("last", 1), TTL: time.Hour})
		reserved <- err
	}()
	<-inRedis // the unit is taken in Redis; the journal row is not committed
	require.NoError(t, rdb.FlushDB(ctx).Err())
	rebuilt := make(chan error, 1)
	go func() {
		_, err := d.Rebuild(ctx)
		rebuilt <- err
	}()
	// The rebuild is queued behind the writer's shared lock on the generation row: it must
	// not finish while the writer is held. Seeing its lock wait ends the watch early; a
	// rebuild still unfinished after 30 s has waited all the same.
	deadline := time.After(30 * time.Second)
	for waiting := 0; waiting == 0; {
		select {
		case err := <-rebuilt:
			t.Fatalf("the rebuild finished before the writer committed: %v", err)
		case <-deadline:
			waiting = -1
			continue
		case <-time.After(10 * time.Millisecond):
		}
		require.NoError(t, db.QueryRowContext(ctx,
			`SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'`).Scan(&waiting))
	}
	release()
	require.NoError(t, <-reserved)
	require.NoError(t, <-rebuilt)

	wantStock(t, inv, "last", 1, 0, 0)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "late", Lines: line("last", 1)})
	require.ErrorIs(t, err, inventory.ErrInsufficientStock, "the last unit is not sold twice")
	require.NoError(t, inv.Commit(ctx, "slow"))
	wantStock(t, inv, "last", 0, 0, 1)
}

// BenchmarkRebuild measures a rebuild of Redis from the journal: 5,000 SKUs, 20,000
// reservations that hold units (15,000 committed, 5,000 live, each with a buyer). It
// reports the seconds one rebuild takes, from the generation bump to the marker.
func BenchmarkRebuild(b *testing.B) {
	ctx := context.Background()
	db := testenv.MySQL(b)
	require.NoError(b, redisinventory.CreateJournal(ctx, db))
	const skus, reservations, live = 5_000, 20_000, 5_000
	insert := func(query string, rows int, row func(i int) []any) {
		for start := 0; start < rows; start += 1_000 {
			q, args := query, []any{}
			for i := start; i < min(start+1_000, rows); i++ {
				if i > start {
					q += ", "
				}
				r := row(i)
				q += "(" + strings.TrimSuffix(strings.Repeat("?, ", len(r)), ", ") + ")"
				args = append(args, r...)
			}
			_, err := db.ExecContext(ctx, q, args...)
			require.NoError(b, err)
		}
	}
	sku := func(i int) string { return fmt.Sprintf("sku-%05d", i%skus) }
	insert(`INSERT INTO inventory_journal_stock (sku, base, buyer_limit) VALUES `, skus, func(i int) []any {
		return []any{sku(i), 1_000, 2}
	})
	deadline := time.Now().Add(time.Hour).UnixMilli()
	insert(`INSERT INTO inventory_journal_reservations (id, state, items, buyer_id, created_at, expires_at) VALUES `, reservations,
		func(i int) []any {
			state := "committed"
			if i < live {
				state = "reserved"
			}
			return []any{fmt.Sprintf("r-%d", i), state, sku(i) + "=1", fmt.Sprintf("u-%d", i), deadline - 3_600_000, deadline}
		})
	d := testkit.Must(redisinventory.NewDurable(testenv.Redis(b), db))(b)
	b.ResetTimer()
	var rep redisinventory.RebuildReport
	for b.Loop() {
		var err error
		rep, err = d.Rebuild(ctx)
		require.NoError(b, err)
	}
	require.Equal(b, skus, rep.SKUs)
	require.Equal(b, live, rep.Reservations)
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/rebuild")
	b.ReportMetric(0, "ns/op")
}

// TestDurableRestartedWithOldData: a Redis that comes back with an older copy of its data
// under a good marker (a restored snapshot, a failover to a lagging replica) is noticed by
// its new run ID and rebuilt. Before the healer has looked, a reservation that the old
// copy would grant (units the journal already gave away) fails closed: the writer noticed
// the new server itself.
func TestDurableRestartedWithOldData(t *testing.T) {
	ctx := context.Background()
	d, inv, _, _ := backWithOldData(t)
	wantStock(t, inv, "a", 5, 5, 0) // the old copy, marker and all (a display read)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "oversell", Lines: line("a", 5)})
	require.ErrorIs(t, err, errcode.ErrUnavailable, "5 units the old copy shows, 3 the journal has")

	healed, err := d.Heal(ctx)
	require.NoError(t, err)
	require.True(t, healed, "a new run ID means a rebuild")
	wantStock(t, inv, "a", 5, 3, 0)
	_, err = d.Get(ctx, "oversell")
	require.ErrorIs(t, err, inventory.ErrReservationNotFound, "the refused reservation left nothing in the journal")
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "oversell", Lines: line("a", 5)})
	require.ErrorIs(t, err, inventory.ErrInsufficientStock)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "fits", Lines: line("a", 3)})
	require.NoError(t, err)
	wantStock(t, inv, "a", 5, 0, 0)
}

// backWithOldData journals 5 units of SKU "a" through a healed Durable on its own Redis,
// snapshots Redis, reserves 2 units ("after-snapshot"), then restarts Redis, which comes
// back with the snapshot: an older copy of the data under a good marker. It returns that
// Durable, its inventory, the Redis client and the journal's database.
func backWithOldData(t *testing.T) (*redisinventory.Durable, *inventory.Inventory, *redis.Client, *bun.DB) {
	t.Helper()
	ctx := context.Background()
	own := testenv.OwnRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: own.Addr})
	t.Cleanup(func() { rdb.Close() })
	db := testenv.MySQL(t)
	require.NoError(t, redisinventory.CreateJournal(ctx, db))
	d := testkit.Must(redisinventory.NewDurable(rdb, db))(t)
	_, err := d.Heal(ctx)
	require.NoError(t, err)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "a", 5, 0)
	require.NoError(t, rdb.Save(ctx).Err()) // the snapshot the server will come back with
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "after-snapshot", Lines: line("a", 2), TTL: time.Hour})
	require.NoError(t, err)
	own.Stop(t, 0)
	own.Start(t)
	require.Eventually(t, func() bool { return rdb.Ping(ctx).Err() == nil }, 30*time.Second, 50*time.Millisecond)
	return d, inv, rdb, db
}

// TestDurableConcurrentReplaysWait: 30 concurrent replays of one reservation on the
// journal, piled up behind its first transaction (held open a while), all get it, none
// with ErrContention: replays wait for the first transaction instead of deadlocking each
// other (the journal's replay read takes the shared lock the failed INSERT holds, never
// an exclusive one), and the units are taken once.
func TestDurableConcurrentReplaysWait(t *testing.T) {
	ctx := context.Background()
	d, _, _ := newDurable(t)
	redisinventory.SetHook(d, func(op, _ string) {
		if op == "reserve" {
			time.Sleep(200 * time.Millisecond) // every replay now waits on the first insert
		}
	})
	inv := testkit.Must(inventory.New(d))(t)
	for _, sku := range []string{"a", "b"} {
		setStock(t, inv, sku, 100, 0)
	}
	req := inventory.ReserveRequest{ID: "same", Lines: []inventory.Line{{SKU: "a", Qty: 3}, {SKU: "b", Qty: 2}}, TTL: time.Minute, BuyerID: "buyer-1"}
	const n = 30
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = inv.Reserve(ctx, req) })
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i], "replay %d", i)
	}
	wantStock(t, inv, "a", 100, 97, 0)
	wantStock(t, inv, "b", 100, 98, 0)
}

// TestDurableBatchIsolatesCallers: concurrent reservations share journal transactions
// (their scripts pipelined); a refused one (out of stock, over the buyer limit, a
// conflicting replay) fails alone and leaves no journal row, and the rest hold exactly
// what Redis and the journal say — also after the scripts were flushed from Redis.
func TestDurableBatchIsolatesCallers(t *testing.T) {
	ctx := context.Background()
	d, rdb, db := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "drop", 40, 2)
	require.NoError(t, rdb.ScriptFlush(ctx).Err()) // the pipelined scripts must load themselves

	const n = 60 // 30 buyers, 3 each (one over the limit): more than the 40 units; and a few too large
	errs := make([]error, n+30+5)
	var wg sync.WaitGroup
	for i := range n + 30 {
		wg.Go(func() {
			_, errs[i] = inv.Reserve(ctx, inventory.ReserveRequest{ID: fmt.Sprintf("r%d", i), BuyerID: fmt.Sprintf("b%d", i%30),
				Lines: line("drop", 1), TTL: time.Hour})
		})
	}
	for i := range 5 {
		wg.Go(func() {
			_, errs[n+30+i] = inv.Reserve(ctx, inventory.ReserveRequest{ID: fmt.Sprintf("big%d", i), BuyerID: "big",
				Lines: line("drop", 41), TTL: time.Hour})
		})
	}
	wg.Wait()
	held := 0
	for i, err := range errs {
		switch {
		case err == nil:
			held++
		case i >= n+30:
			require.ErrorIs(t, err, inventory.ErrInsufficientStock)
		case !errors.Is(err, inventory.ErrInsufficientStock):
			require.ErrorIs(t, err, inventory.ErrBuyerLimitExceeded, "r%d", i)
		}
	}
	assert.Equal(t, 40, held, "every unit is held, once")
	wantStock(t, inv, "drop", 40, 0, 0)
	var rows, lines int
	require.NoError(t, db.NewRaw("SELECT COUNT(*) FROM inventory_journal_reservations").Scan(ctx, &rows))
	require.NoError(t, db.NewRaw("SELECT COALESCE(SUM(qty), 0) FROM inventory_journal_lines").Scan(ctx, &lines))
	assert.Equal(t, 40, rows, "refused reservations leave no journal row")
	assert.Equal(t, 40, lines)
}

// TestDurableStraySweepLeavesLiveRowsUnlocked: the sweep of Redis strays does not lock the
// due reservations the journal still holds live, so a concurrent journal sweep (SKIP
// LOCKED) finds them. It once locked them: four concurrent sweepers could then all report
// nothing due while one reservation was, and it stayed reserved.
func TestDurableStraySweepLeavesLiveRowsUnlocked(t *testing.T) {
	ctx := context.Background()
	d, _, db := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "a", 2, 0)
	for _, id := range []string{"live", "stray"} {
		_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: line("a", 1), TTL: time.Minute})
		require.NoError(t, err)
	}
	// A process died between releasing "stray" in the journal and in Redis.
	_, err := db.ExecContext(ctx, `UPDATE inventory_journal_reservations SET state = 'released' WHERE id = 'stray'`)
	require.NoError(t, err)

	var seen []string
	redisinventory.SetHook(d, func(op, _ string) {
		if op != "strays" {
			return
		}
		err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			return tx.NewRaw(`SELECT id FROM inventory_journal_reservations WHERE state = 'reserved' FOR UPDATE SKIP LOCKED`).Scan(ctx, &seen)
		})
		assert.NoError(t, err)
	})
	later := time.Now().Add(2 * time.Minute)
	require.NoError(t, redisinventory.SweepStrays(ctx, d, later, 10))
	assert.Equal(t, []string{"live"}, seen, "a journal sweep running meanwhile finds the live reservation")
	wantStock(t, inv, "a", 2, 1, 0)

	n, err := d.Expire(ctx, later, 10)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	wantStock(t, inv, "a", 2, 2, 0)
}

// TestBatchIsSequential: reservations combined into one script call (and, with Durable, one
// journal transaction) get the answers and leave the state they would one after another:
// the script reads each SKU's stock and buyer usage once per batch and writes them at the
// end, so a batch whose later reservations did not see the earlier ones' units would
// oversell or refuse wrongly here.
func TestBatchIsSequential(t *testing.T) {
	for _, s := range []struct {
		name string
		new  func(t *testing.T) (inventory.Backend, *redis.Client)
	}{
		{"plain", func(t *testing.T) (inventory.Backend, *redis.Client) {
			rdb := testenv.Redis(t)
			return testkit.Must(redisinventory.New(rdb))(t), rdb
		}},
		{"durable", func(t *testing.T) (inventory.Backend, *redis.Client) {
			d, rdb, _ := newDurable(t)
			return d, rdb
		}},
	} {
		t.Run(s.name, func(t *testing.T) {
			batched := runBatchScenario(t, s.new, true)
			alone := runBatchScenario(t, s.new, false)
			assert.Equal(t, alone, batched, "one batch and one reservation at a time differ")

			want := []string{
				"a: reserved",
				"b: " + (&inventory.InsufficientStockError{SKU: "hot", Requested: 3, Available: 2}).Error(),
				"c: reserved",
				"d: " + (&inventory.BuyerLimitError{SKU: "drop", BuyerID: "b1", Limit: 2, Used: 2, Requested: 1}).Error(),
				"a: reserved",     // a replay of a reservation of the same batch
				"early: reserved", // a replay of one reserved before
				"e: " + (&inventory.InsufficientStockError{SKU: "hot", Requested: 3, Available: 2}).Error(),
				"a: conflict",
				"f: reserved",
				"g: " + (&inventory.UnknownSKUError{SKU: "nope"}).Error(),
				"h: " + (&inventory.BuyerLimitError{SKU: "drop", Limit: 2, Requested: 1}).Error(),
				"i: reserved",
				"j: reserved",
				"j: reserved",
				"k: reserved",
				"l: " + (&inventory.BuyerLimitError{SKU: "drop", BuyerID: "b3", Limit: 2, Used: 2, Requested: 1}).Error(),
			}
			assert.Equal(t, want, batched.answers)
			assert.Equal(t, [2][3]int64{{10, 5, 0}, {5, 0, 0}}, batched.stock, "drop, hot: on hand, available, sold")
			assert.Equal(t, [2]map[string]string{{"b1": "2", "b2": "1", "b3": "2"}, {"b1": "1"}}, batched.usage, "buyer usage of drop, hot")
			assert.Equal(t, []string{"a", "c", "early", "f", "i", "j", "k"}, batched.due, "the due index holds the reservations made")
			assert.Equal(t, map[string]string{
				"early": "reserved drop=1,hot=1 b1", "a": "reserved hot=2 ", "c": "reserved drop=1 b1",
				"f": "reserved hot=2 ", "i": "reserved drop=1 b2",
				"j": "reserved drop=1 b3", "k": "reserved drop=1 b3",
			}, batched.records)
		})
	}
}

// batchScenario is what runBatchScenario saw: each answer, and the state left.
type batchScenario struct {
	answers []string
	stock   [2][3]int64          // drop, hot: on hand, available, sold
	usage   [2]map[string]string // drop, hot: units per buyer
	due     []string
	records map[string]string // id: state, lines, buyer of every reservation held
}

// runBatchScenario stocks "drop" (10 units, 2 per buyer) and "hot" (5 units), reserves
// "early" (one of each, buyer b1), then runs two batches of reservations that depend on
// each other's effects, each in one call (batched) or one reservation at a time.
func runBatchScenario(t *testing.T, newBackend func(t *testing.T) (inventory.Backend, *redis.Client), batched bool) batchScenario {
	ctx := context.Background()
	be, rdb := newBackend(t)
	inv := testkit.Must(inventory.New(be))(t)
	setStock(t, inv, "drop", 10, 2)
	setStock(t, inv, "hot", 5, 0)
	now := time.Now().UTC().Truncate(time.Millisecond)
	res := func(id, buyer string, lines ...inventory.Line) inventory.Reservation {
		return inventory.Reservation{ID: id, BuyerID: buyer, Lines: lines, State: inventory.StateReserved,
			CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	drop, hot := inventory.Line{SKU: "drop", Qty: 1}, func(q int64) inventory.Line { return inventory.Line{SKU: "hot", Qty: q} }
	_, errs := redisinventory.ReserveBatch(ctx, be, res("early", "b1", drop, hot(1)))
	require.NoError(t, errs[0])

	batches := [][]inventory.Reservation{{
		res("a", "", hot(2)),                              // fits: 2 of hot left
		res("b", "", hot(3)),                              // more than a left
		res("c", "b1", drop),                              // b1's second unit of drop: at its limit
		res("d", "b1", drop),                              // over b1's limit, counting c
		res("a", "", hot(2)),                              // replay of a
		res("early", "b1", drop, hot(1)),                  // replay of early
		res("e", "b2", drop, hot(3)),                      // refused on its second line: takes nothing
		res("a", "", hot(1)),                              // a with other lines
		res("f", "", hot(2)),                              // the last 2 of hot
		res("g", "", inventory.Line{SKU: "nope", Qty: 1}), // unknown SKU
		res("h", "", drop),                                // drop has a buyer limit: no buyer, no unit
		res("i", "b2", drop),                              // e took nothing of b2's limit
	}, { // no record exists before this batch
		res("j", "b3", drop),
		res("j", "b3", drop), // replay of j, made in this batch
		res("k", "b3", drop), // b3's second unit
		res("l", "b3", drop), // over b3's limit
	}}
	var rs, got []inventory.Reservation
	errs = nil
	for _, batch := range batches {
		rs = append(rs, batch...)
		if batched {
			out, e := redisinventory.ReserveBatch(ctx, be, batch...)
			got, errs = append(got, out...), append(errs, e...)
			continue
		}
		for _, r := range batch {
			out, e := redisinventory.ReserveBatch(ctx, be, r)
			got, errs = append(got, out[0]), append(errs, e[0])
		}
	}
	var s batchScenario
	for i, r := range rs {
		switch {
		case errors.Is(errs[i], inventory.ErrIdempotencyConflict):
			s.answers = append(s.answers, r.ID+": conflict")
		case errs[i] != nil:
			s.answers = append(s.answers, r.ID+": "+errs[i].Error())
		default:
			require.Equal(t, r.ID, got[i].ID)
			require.Equal(t, r.Lines, got[i].Lines, r.ID)
			s.answers = append(s.answers, fmt.Sprintf("%s: %s", r.ID, got[i].State))
		}
	}
	for i, sku := range []string{"drop", "hot"} {
		st, err := inv.Stock(ctx, sku)
		require.NoError(t, err)
		s.stock[i] = [3]int64{st.OnHand, st.Available, st.Sold}
		s.usage[i], err = rdb.HGetAll(ctx, "{inventory}:buyers:"+sku).Result()
		require.NoError(t, err)
		delete(s.usage[i], " ") // the journaled backend's sentinel of a usage key, no buyer
	}
	var err error
	s.due, err = rdb.ZRange(ctx, "{inventory}:due", 0, -1).Result()
	require.NoError(t, err)
	s.records = map[string]string{}
	for _, id := range []string{"early", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"} {
		r, err := be.Get(ctx, id)
		if errors.Is(err, inventory.ErrReservationNotFound) {
			continue
		}
		require.NoError(t, err)
		require.Equal(t, now.Add(time.Hour), r.ExpiresAt, id)
		s.records[id] = fmt.Sprintf("%s %s %s", r.State, inventory.EncodeLines(r.Lines), r.BuyerID)
	}
	return s
}

// TestDurableBatchAdoptsEarlierAttempts: in a batch of the journaled backend, a live Redis
// record of a reservation the journal does not hold (the Redis half of an attempt whose
// SQL transaction rolled back) is adopted without taking its units again, a dead one is
// reserved anew over, and the others of the batch are reserved as usual.
func TestDurableBatchAdoptsEarlierAttempts(t *testing.T) {
	ctx := context.Background()
	d, rdb, _ := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "hot", 10, 0)
	now := time.Now().UTC().Truncate(time.Millisecond)
	res := func(id string, qty int64) inventory.Reservation {
		return inventory.Reservation{ID: id, Lines: line("hot", qty), State: inventory.StateReserved, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	// The Redis halves alone, as the rolled-back attempts left them.
	plain := testkit.Must(redisinventory.New(rdb))(t)
	_, errs := redisinventory.ReserveBatch(ctx, plain, res("live", 2), res("dead", 3))
	require.NoError(t, errors.Join(errs...))
	_, err := plain.Release(ctx, "dead", now)
	require.NoError(t, err)
	wantStock(t, inv, "hot", 10, 8, 0)

	_, errs = redisinventory.ReserveBatch(ctx, d, res("new", 1), res("live", 2), res("dead", 3))
	require.NoError(t, errors.Join(errs...))
	wantStock(t, inv, "hot", 10, 4, 0) // live's 2 units once, dead's 3 anew, new's 1
	for _, id := range []string{"new", "live", "dead"} {
		r, err := d.Get(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, inventory.StateReserved, r.State, id)
		assert.Equal(t, now.Add(time.Hour), r.ExpiresAt, id)
	}
	due, err := rdb.ZRange(ctx, "{inventory}:due", 0, -1).Result()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"new", "live", "dead"}, due)
}

// TestBatchFailingMidwayKeepsItsWrites: when a redis.call fails in the middle of a
// combined reserve call (here a record key of the wrong type), the call fails for all its
// callers, and what the reservations before it did is written whole, as running them one
// after another would have left it: their units, records and due entries together, never
// a record without its units.
func TestBatchFailingMidwayKeepsItsWrites(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	be := testkit.Must(redisinventory.New(rdb))(t)
	inv := testkit.Must(inventory.New(be))(t)
	setStock(t, inv, "hot", 5, 0)
	require.NoError(t, rdb.Set(ctx, "{inventory}:res:bad", "not a record", 0).Err())
	now := time.Now().UTC().Truncate(time.Millisecond)
	res := func(id string) inventory.Reservation {
		return inventory.Reservation{ID: id, Lines: line("hot", 2), State: inventory.StateReserved, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	_, errs := redisinventory.ReserveBatch(ctx, be, res("a"), res("bad"), res("c"))
	for _, err := range errs {
		require.ErrorContains(t, err, "WRONGTYPE")
	}
	wantStock(t, inv, "hot", 5, 3, 0)
	r, err := be.Get(ctx, "a")
	require.NoError(t, err)
	assert.Equal(t, inventory.StateReserved, r.State)
	_, err = be.Get(ctx, "c")
	require.ErrorIs(t, err, inventory.ErrReservationNotFound)
	due, err := rdb.ZRange(ctx, "{inventory}:due", 0, -1).Result()
	require.NoError(t, err)
	assert.Equal(t, []string{"a"}, due)
}

// TestDurableRefusesToWipeUnjournaledStock: a first Heal over a Redis that already holds a
// plain Backend's stock under the same prefix fails closed (building from the empty
// journal would wipe it) and leaves it alone; a Durable with a prefix of its own heals
// beside it; Rebuild wipes it on purpose.
func TestDurableRefusesToWipeUnjournaledStock(t *testing.T) {
	ctx := context.Background()
	db, rdb := testenv.MySQL(t), testenv.Redis(t)
	require.NoError(t, redisinventory.CreateJournal(ctx, db))
	plain := testkit.Must(inventory.New(testkit.Must(redisinventory.New(rdb))(t)))(t)
	setStock(t, plain, "tee", 7, 0)

	d := testkit.Must(redisinventory.NewDurable(rdb, db))(t)
	_, err := d.Heal(ctx)
	require.ErrorIs(t, err, redisinventory.ErrUnjournaledData)
	assert.Equal(t, errcode.FailedPrecondition, errcode.CodeOf(err))
	wantStock(t, plain, "tee", 7, 7, 0)

	own := testenv.MySQL(t)
	require.NoError(t, redisinventory.CreateJournal(ctx, own))
	other := testkit.Must(redisinventory.NewDurable(rdb, own, redisinventory.WithTag("durable")))(t)
	healed, err := other.Heal(ctx)
	require.NoError(t, err)
	assert.True(t, healed)
	wantStock(t, plain, "tee", 7, 7, 0)

	_, err = d.Rebuild(ctx)
	require.NoError(t, err)
	_, err = plain.Stock(ctx, "tee")
	require.ErrorIs(t, err, inventory.ErrUnknownSKU, "Rebuild wipes what the journal does not hold")
}

// TestOptionsRefuseBadValues: New and NewDurable refuse an invalid option value, naming it.
func TestOptionsRefuseBadValues(t *testing.T) {
	rdb := testenv.Redis(t)
	bad := map[string]redisinventory.Option{
		`WithTag: ""`: redisinventory.WithTag(""), `WithTag: "a{b"`: redisinventory.WithTag("a{b"),
		"WithRetention: -1s": redisinventory.WithRetention(-time.Second), "WithLogger: nil": redisinventory.WithLogger(nil),
		"WithRebuildWait: 0s": redisinventory.WithRebuildWait(0), "WithRebuildWait: -1s": redisinventory.WithRebuildWait(-time.Second),
	}
	testkit.RefusesBadOptions(t, func(o ...redisinventory.Option) (*redisinventory.Backend, error) {
		return redisinventory.New(rdb, o...)
	}, bad)
	testkit.RefusesBadOptions(t, func(o ...redisinventory.Option) (*redisinventory.Durable, error) {
		return redisinventory.NewDurable(rdb, nil, o...)
	}, bad)
	_, err := redisinventory.New(rdb, redisinventory.WithTag("shop"), redisinventory.WithRetention(0), redisinventory.WithLogger(slog.Default()))
	require.NoError(t, err)
}

// TestDurableHealsAKeyOfTheWrongType: a SKU key that holds another type (something else
// wrote it) fails closed as lost data (503, rebuilding), not as an outage a retry outlives,
// and the healer's rebuild writes it anew from the journal.
func TestDurableHealsAKeyOfTheWrongType(t *testing.T) {
	ctx := context.Background()
	d, rdb, _ := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "tee", 5, 0)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "r1", Lines: line("tee", 2), TTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, rdb.Del(ctx, "{inventory}:stock:tee").Err())
	require.NoError(t, rdb.Set(ctx, "{inventory}:stock:tee", "not a hash", 0).Err())

	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "r2", Lines: line("tee", 1), TTL: time.Hour})
	requireRebuilding(t, err)
	healed, err := d.Heal(ctx)
	require.NoError(t, err)
	assert.True(t, healed, "the wrong-typed key asked for a rebuild")
	wantStock(t, inv, "tee", 5, 3, 0)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "r2", Lines: line("tee", 1), TTL: time.Hour})
	require.NoError(t, err)
	wantStock(t, inv, "tee", 5, 2, 0)
}

// lostReplies makes the script calls of a client fail after Redis ran them, while on: the
// reply of a call that did its work is lost on the way back (a reset connection).
type lostReplies struct{ on atomic.Bool }

func (h *lostReplies) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *lostReplies) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if name := cmd.Name(); err == nil && h.on.Load() && (name == "evalsha" || name == "eval") {
			err = errors.New("injected: connection reset by peer")
			cmd.SetErr(err)
		}
		return err
	}
}

func (h *lostReplies) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestDurableCommitBatchFailsWhole: a batch of commits whose Redis step fails (the reply
// lost after Redis committed the units), whose generation moved (Redis lost its data), or
// whose transaction dies after the Redis step (its connection killed) fails every caller
// with a 503-able error and leaves the journal as it was: no half-committed batch, and the
// units stay taken in Redis. The retry then commits each reservation exactly once.
func TestDurableCommitBatchFailsWhole(t *testing.T) {
	ctx := context.Background()
	d, rdb, db := newDurable(t)
	faults := &lostReplies{}
	rdb.AddHook(faults)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "a", 100, 10)
	now := time.Now().UTC().Truncate(time.Millisecond)
	var rs []inventory.Reservation
	for i := range 15 {
		rs = append(rs, inventory.Reservation{ID: fmt.Sprintf("c%d", i), BuyerID: fmt.Sprintf("b%d", i%3), Lines: line("a", 2),
			State: inventory.StateReserved, CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
	}
	_, errs := redisinventory.ReserveBatch(ctx, d, rs...)
	require.NoError(t, errors.Join(errs...))
	commits := func(ids ...int) []redisinventory.Resolution {
		var xs []redisinventory.Resolution
		for _, i := range ids {
			xs = append(xs, redisinventory.Resolution{ID: fmt.Sprintf("c%d", i), To: inventory.StateCommitted, Now: now})
		}
		return xs
	}
	journal := func() map[string]int {
		var rows []struct {
			State string `bun:"state"`
			N     int    `bun:"n"`
		}
		require.NoError(t, db.NewRaw(`SELECT state, COUNT(*) AS n FROM inventory_journal_reservations GROUP BY state`).Scan(ctx, &rows))
		m := map[string]int{}
		for _, r := range rows {
			m[r.State] = r.N
		}
		return m
	}
	retry := func(ids ...int) {
		t.Helper()
		for range 2 { // the retry commits; its replay changes nothing
			states, errs := redisinventory.ResolveBatch(ctx, d, commits(ids...)...)
			require.NoError(t, errors.Join(errs...))
			for _, st := range states {
				require.Equal(t, inventory.StateCommitted, st)
			}
		}
	}

	// The reply of the settle script is lost: Redis committed the units, the journal did not.
	faults.on.Store(true)
	_, errs = redisinventory.ResolveBatch(ctx, d, commits(0, 1, 2, 3, 4)...)
	faults.on.Store(false)
	for _, err := range errs {
		require.ErrorIs(t, err, errcode.ErrUnavailable)
	}
	assert.Equal(t, map[string]int{"reserved": 15}, journal())
	wantStock(t, inv, "a", 90, 70, 10) // the units stay taken, as sold in Redis
	retry(0, 1, 2, 3, 4)
	assert.Equal(t, map[string]int{"reserved": 10, "committed": 5}, journal())
	wantStock(t, inv, "a", 90, 70, 10)

	// The generation moved: Redis lost its data. Every caller fails closed.
	require.NoError(t, rdb.Set(ctx, "{inventory}:generation", "999", 0).Err())
	_, errs = redisinventory.ResolveBatch(ctx, d, commits(5, 6, 7, 8, 9)...)
	for _, err := range errs {
		requireRebuilding(t, err)
	}
	assert.Equal(t, map[string]int{"reserved": 10, "committed": 5}, journal())
	_, err := d.Heal(ctx)
	require.NoError(t, err)
	wantStock(t, inv, "a", 90, 70, 10)
	retry(5, 6, 7, 8, 9)
	assert.Equal(t, map[string]int{"reserved": 5, "committed": 10}, journal())
	wantStock(t, inv, "a", 80, 70, 20)

	// The transaction's connection dies after the Redis step, before the commit.
	var once sync.Once
	redisinventory.SetHook(d, func(op, _ string) {
		once.Do(func() {
			var id int64
			require.NoError(t, db.QueryRowContext(ctx, `SELECT t.trx_mysql_thread_id FROM information_schema.INNODB_TRX t
 JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id WHERE p.DB = DATABASE() AND p.ID <> CONNECTION_ID()`).Scan(&id))
			_, err := db.ExecContext(ctx, fmt.Sprintf("KILL %d", id))
			require.NoError(t, err)
		})
	})
	_, errs = redisinventory.ResolveBatch(ctx, d, commits(10, 11, 12, 13, 14)...)
	redisinventory.SetHook(d, nil)
	for _, err := range errs {
		require.ErrorIs(t, err, errcode.ErrUnavailable)
	}
	assert.Equal(t, map[string]int{"reserved": 5, "committed": 10}, journal())
	wantStock(t, inv, "a", 70, 70, 30) // committed in Redis, not in the journal: still taken
	retry(10, 11, 12, 13, 14)
	assert.Equal(t, map[string]int{"committed": 15}, journal())
	wantStock(t, inv, "a", 70, 70, 30)
	usage, err := rdb.HGetAll(ctx, "{inventory}:buyers:a").Result()
	require.NoError(t, err)
	assert.Equal(t, map[string]string{" ": "1", "b0": "10", "b1": "10", "b2": "10"}, usage, "units per buyer, and the sentinel of a usage key")
}

// TestDurableConcurrentCommitsShareTransactions: concurrent commits (60 distinct, 20 of
// them twice at once) and releases (10) queued behind a slow batch share transactions:
// each transaction is at most five statements (BEGIN, the generation, the rows, one
// UPDATE, COMMIT) however many it carries, each caller gets its own
// answer, and stock, buyer usage and journal end exact.
func TestDurableConcurrentCommitsShareTransactions(t *testing.T) {
	ctx := context.Background()
	d, rdb, db := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "a", 200, 100)
	for i := range 70 {
		_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: fmt.Sprintf("r%d", i), BuyerID: fmt.Sprintf("b%d", i%2),
			Lines: line("a", 2), TTL: time.Hour})
		require.NoError(t, err)
	}
	// The commits go through a Durable on the same journal whose statements are counted.
	count := &testkit.Statements{}
	d = testkit.Must(redisinventory.NewDurable(rdb, db.WithQueryHook(count)))(t)
	inv = testkit.Must(inventory.New(d))(t)
	var once sync.Once
	redisinventory.SetHook(d, func(op, _ string) {
		if op == "commit" {
			once.Do(func() { time.Sleep(100 * time.Millisecond) }) // the others queue meanwhile
		}
	})
	errs := make([]error, 90)
	var wg sync.WaitGroup
	for i := range 90 {
		wg.Go(func() {
			switch {
			case i < 60:
				errs[i] = inv.Commit(ctx, fmt.Sprintf("r%d", i))
			case i < 80:
				errs[i] = inv.Commit(ctx, fmt.Sprintf("r%d", i-60)) // the same ID at once: one commits, one replays
			default:
				errs[i] = inv.Release(ctx, fmt.Sprintf("r%d", i-20))
			}
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	batches, calls := redisinventory.ResolveStats(d)
	assert.Equal(t, int64(90), calls)
	assert.Less(t, batches, int64(30), "concurrent resolutions share transactions")
	assert.Equal(t, batches, count.Begins.Load(), "one transaction per batch")
	assert.LessOrEqual(t, count.All.Load(), 5*batches, "at most five statements per batch (four when no row moves)")
	t.Logf("90 resolutions in %d transactions: %.2f transactions and %.2f statements per resolution (alone: 1 and 5)",
		batches, float64(batches)/90, float64(count.All.Load())/90)

	wantStock(t, inv, "a", 80, 80, 120)
	usage, err := rdb.HGetAll(ctx, "{inventory}:buyers:a").Result()
	require.NoError(t, err)
	assert.Equal(t, map[string]string{" ": "1", "b0": "60", "b1": "60"}, usage, "units per buyer, and the sentinel of a usage key")
	var committed, released int
	require.NoError(t, db.NewRaw(`SELECT COUNT(*) FROM inventory_journal_reservations WHERE state = 'committed'`).Scan(ctx, &committed))
	require.NoError(t, db.NewRaw(`SELECT COUNT(*) FROM inventory_journal_reservations WHERE state = 'released'`).Scan(ctx, &released))
	assert.Equal(t, [2]int{60, 10}, [2]int{committed, released})
}

// TestDurableSetStockOverALostStockKey: Redis loses one SKU's stock and buyer usage keys
// (evicted under memory pressure, or missing from a partial restore) under a good marker,
// while a reservation holds units of it, and the next call on the SKU is a SetStock (a
// restock). The setting must count what the journal has reserved, or fail closed and have
// Redis rebuilt: never put the reserved units on sale again, nor forget the buyer's usage.
func TestDurableSetStockOverALostStockKey(t *testing.T) {
	ctx := context.Background()
	d, rdb, _ := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "drop", 5, 3)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "u1-a", Lines: line("drop", 2), BuyerID: "u1", TTL: time.Hour})
	require.NoError(t, err)
	wantStock(t, inv, "drop", 5, 3, 0)

	require.NoError(t, rdb.Del(ctx, "{inventory}:stock:drop", "{inventory}:buyers:drop").Err())
	// healed retries op once after a heal when it fails closed, as a client honouring 503 +
	// Retry-After does once Run healed.
	healed := func(op func() error) error {
		err := op()
		if errors.Is(err, errcode.ErrUnavailable) {
			_, herr := d.Heal(ctx)
			require.NoError(t, herr)
			err = op()
		}
		return err
	}
	require.NoError(t, healed(func() error {
		_, err := inv.SetStock(ctx, inventory.StockSetting{SKU: "drop", OnHand: 5, BuyerLimit: 3})
		return err
	}))
	reserve := func(id, buyer string, qty int64) error {
		return healed(func() error {
			_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: line("drop", qty), BuyerID: buyer, TTL: time.Hour})
			return err
		})
	}
	assert.ErrorIs(t, reserve("u1-b", "u1", 2), inventory.ErrBuyerLimitExceeded, "u1 holds 2 of its 3 already")
	assert.NoError(t, reserve("u2-a", "u2", 3))
	assert.ErrorIs(t, reserve("u3-a", "u3", 1), inventory.ErrInsufficientStock, "5 on hand, 5 reserved")
	wantStock(t, inv, "drop", 5, 0, 0)
	_, err = d.Rebuild(ctx)
	require.NoError(t, err)
	wantStock(t, inv, "drop", 5, 0, 0)
}

// TestDurableAdjustOverALostStockKey: Redis loses one SKU's stock key under a good marker,
// and the next calls on the SKU are adjustments, one down and one up. A SKU the journal
// knows is never "unknown": each fails closed (503) or succeeds, and once Redis is healed
// it holds exactly what the journal does, adjustments included.
func TestDurableAdjustOverALostStockKey(t *testing.T) {
	ctx := context.Background()
	d, inv, rdb := orderOne(t, false)

	for _, a := range []inventory.Adjustment{
		{ID: "damaged", SKU: "mug", Delta: -1, Reason: "damaged"},
		{ID: "restock", SKU: "mug", Delta: 4, Reason: "restock"},
	} {
		require.NoError(t, rdb.Del(ctx, "{inventory}:stock:mug").Err())
		_, err := inv.Adjust(ctx, a)
		if err != nil {
			require.ErrorIs(t, err, errcode.ErrUnavailable, "%s: a SKU the journal knows", a.ID)
		}
		_, err = d.Heal(ctx) // what Run does when the failure woke it
		require.NoError(t, err)
		_, err = inv.Adjust(ctx, a) // the client's retry
		require.NoError(t, err, a.ID)
	}
	wantStock(t, inv, "mug", 8, 6, 0)
}
