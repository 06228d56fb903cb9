package redisinventory_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
)

// TestWarmUpOutOfRange: WarmUp refuses a stock out of the inventory's range with a
// *ValidationError matching ErrInvalidQuantity, as SetStock does, and loads nothing; the
// largest allowed count loads exactly: twice MaxOnHand, as returns may leave it in SQL.
func TestWarmUpOutOfRange(t *testing.T) {
	ctx := context.Background()
	rb := testkit.Must(redisinventory.New(testenv.Redis(t)))(t)
	live := testkit.Must(inventory.New(rb))(t)
	for _, st := range []inventory.Stock{
		{SKU: "mug", Available: 2*inventory.MaxOnHand + 1},
		{SKU: "mug", Available: -1},
		{SKU: "mug", Available: 1, BuyerLimit: -1},
		{SKU: "mug", Available: 1, BuyerLimit: inventory.MaxOnHand + 1},
	} {
		n, err := rb.WarmUp(ctx, []inventory.Stock{{SKU: "tee", Available: 1}, st})
		require.ErrorIs(t, err, inventory.ErrInvalidQuantity, "%+v", st)
		var ve *inventory.ValidationError
		require.ErrorAs(t, err, &ve)
		assert.Zero(t, n)
	}
	_, err := live.Stock(ctx, "tee")
	require.ErrorIs(t, err, inventory.ErrUnknownSKU, "a refused warm-up loads nothing")

	n, err := rb.WarmUp(ctx, []inventory.Stock{{SKU: "mug", Available: 2 * inventory.MaxOnHand, BuyerLimit: inventory.MaxOnHand}})
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	st, err := live.Stock(ctx, "mug")
	require.NoError(t, err)
	assert.Equal(t, inventory.Stock{SKU: "mug", OnHand: 2 * inventory.MaxOnHand, Available: 2 * inventory.MaxOnHand, BuyerLimit: inventory.MaxOnHand}, st)
}

// TestRecovery walks the documented recovery story: stock is warmed up from the SQL
// system of record, sales are written back to it exactly once, and after Redis comes back
// empty the inventory fails closed until it is warmed up again.
func TestRecovery(t *testing.T) {
	ctx := context.Background()
	db := testenv.SQLite(t)
	require.NoError(t, sqlinventory.CreateSchema(ctx, db))
	store := testkit.Must(inventory.New(sqlinventory.New(db)))(t)
	_, err := store.SetStock(ctx, inventory.StockSetting{SKU: "drop", OnHand: 10, BuyerLimit: 1})
	require.NoError(t, err)
	_, err = store.SetStock(ctx, inventory.StockSetting{SKU: "tee", OnHand: 5})
	require.NoError(t, err)

	rdb := testenv.Redis(t)
	rb := testkit.Must(redisinventory.New(rdb))(t)
	live := testkit.Must(inventory.New(rb))(t)

	// Warm-up loads what Redis lacks and leaves what it has alone.
	src, err := store.Stocks(ctx, []string{"drop", "tee"})
	require.NoError(t, err)
	warm := []inventory.Stock{src["drop"], src["tee"]}
	n, err := rb.WarmUp(ctx, warm)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	_, err = live.Reserve(ctx, inventory.ReserveRequest{ID: "o1", Lines: []inventory.Line{{SKU: "drop", Qty: 1}, {SKU: "tee", Qty: 2}}, BuyerID: "u1"})
	require.NoError(t, err)
	n, err = rb.WarmUp(ctx, warm)
	require.NoError(t, err)
	assert.Zero(t, n)
	st, err := live.Stock(ctx, "drop")
	require.NoError(t, err)
	assert.Equal(t, inventory.Stock{SKU: "drop", OnHand: 10, Available: 9, Reserved: 1, BuyerLimit: 1}, st)
	_, err = rb.WarmUp(ctx, []inventory.Stock{{SKU: "bad sku", Available: 1}})
	require.ErrorIs(t, err, inventory.ErrInvalidRequest)

	// Sales are written back once, as idempotent adjustments of the SQL store.
	require.NoError(t, live.Commit(ctx, "o1"))
	calls := 0
	writeBack := func(ctx context.Context, sku string, from, to int64) error {
		calls++
		_, err := store.Adjust(ctx, inventory.Adjustment{
			ID: fmt.Sprintf("redis-sold:%s:%d", sku, to), SKU: sku, Delta: from - to, Reason: "sold through redis",
		})
		return err
	}
	written, err := rb.WriteBack(ctx, writeBack)
	require.NoError(t, err)
	assert.Equal(t, int64(3), written)
	assert.Equal(t, 2, calls)
	written, err = rb.WriteBack(ctx, writeBack)
	require.NoError(t, err)
	assert.Zero(t, written)
	assert.Equal(t, 2, calls, "nothing pending, nothing handed out")

	// A write-back that fails keeps its range; the next run hands out the same range.
	_, err = live.Reserve(ctx, inventory.ReserveRequest{ID: "o2", Lines: []inventory.Line{{SKU: "tee", Qty: 1}}})
	require.NoError(t, err)
	require.NoError(t, live.Commit(ctx, "o2"))
	boom := errors.New("sql down")
	var ranges [][2]int64
	_, err = rb.WriteBack(ctx, func(ctx context.Context, sku string, from, to int64) error {
		ranges = append(ranges, [2]int64{from, to})
		return boom
	})
	require.ErrorIs(t, err, boom)
	_, err = live.Reserve(ctx, inventory.ReserveRequest{ID: "o3", Lines: []inventory.Line{{SKU: "tee", Qty: 1}}})
	require.NoError(t, err)
	require.NoError(t, live.Commit(ctx, "o3")) // sold after the claim: the next range
	_, err = rb.WriteBack(ctx, func(ctx context.Context, sku string, from, to int64) error {
		ranges = append(ranges, [2]int64{from, to})
		return writeBack(ctx, sku, from, to)
	})
	require.NoError(t, err)
	written, err = rb.WriteBack(ctx, func(ctx context.Context, sku string, from, to int64) error {
		ranges = append(ranges, [2]int64{from, to})
		return writeBack(ctx, sku, from, to)
	})
	require.NoError(t, err)
	assert.Equal(t, int64(1), written)
	assert.Equal(t, [][2]int64{{2, 3}, {2, 3}, {3, 4}}, ranges)
	m, err := store.Stocks(ctx, []string{"drop", "tee"})
	require.NoError(t, err)
	assert.Equal(t, int64(9), m["drop"].OnHand)
	assert.Equal(t, int64(1), m["tee"].OnHand)

	// Redis comes back empty: everything fails closed (no SKU, no reservation), scripts
	// reload themselves, and a warm-up from the SQL store brings the stock back.
	_, err = live.Reserve(ctx, inventory.ReserveRequest{ID: "o4", Lines: []inventory.Line{{SKU: "tee", Qty: 1}}})
	require.NoError(t, err)
	require.NoError(t, rdb.FlushDB(ctx).Err())
	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	_, err = live.Reserve(ctx, inventory.ReserveRequest{ID: "o5", Lines: []inventory.Line{{SKU: "tee", Qty: 1}}})
	require.ErrorIs(t, err, inventory.ErrUnknownSKU)
	require.ErrorIs(t, live.Commit(ctx, "o4"), inventory.ErrReservationNotFound)
	src, err = store.Stocks(ctx, []string{"drop", "tee"})
	require.NoError(t, err)
	n, err = rb.WarmUp(ctx, []inventory.Stock{src["drop"], src["tee"]})
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	st, err = live.Stock(ctx, "tee")
	require.NoError(t, err)
	assert.Equal(t, inventory.Stock{SKU: "tee", OnHand: 1, Available: 1}, st)
	_, err = live.Reserve(ctx, inventory.ReserveRequest{ID: "o5", Lines: []inventory.Line{{SKU: "tee", Qty: 1}}})
	require.NoError(t, err)
}

// TestKeys checks that every key carries the backend's hash tag (one Cluster slot), that
// backends with different tags are independent, and that resolved reservations and
// adjustment IDs are kept for the retention period only.
func TestKeys(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	a := testkit.Must(inventory.New(testkit.Must(redisinventory.New(rdb, redisinventory.WithTag("shop-a"), redisinventory.WithRetention(time.Hour)))(t)))(t)
	b := testkit.Must(inventory.New(testkit.Must(redisinventory.New(rdb, redisinventory.WithTag("shop-b")))(t)))(t)
	for _, inv := range []*inventory.Inventory{a, b} {
		setStock(t, inv, "mug", 5, 2)
		_, err := inv.Adjust(ctx, inventory.Adjustment{ID: "adj-1", SKU: "mug", Delta: 1, Reason: "restock"})
		require.NoError(t, err)
	}
	for _, id := range []string{"r1", "r2"} {
		_, err := a.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: []inventory.Line{{SKU: "mug", Qty: 1}}, BuyerID: "u1"})
		require.NoError(t, err)
	}
	require.NoError(t, a.Commit(ctx, "r1"))

	stA, err := a.Stock(ctx, "mug")
	require.NoError(t, err)
	stB, err := b.Stock(ctx, "mug")
	require.NoError(t, err)
	assert.Equal(t, inventory.Stock{SKU: "mug", OnHand: 5, Available: 4, Reserved: 1, Sold: 1, BuyerLimit: 2}, stA)
	assert.Equal(t, inventory.Stock{SKU: "mug", OnHand: 6, Available: 6, BuyerLimit: 2}, stB)

	keys, err := rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	for _, k := range keys {
		assert.True(t, strings.HasPrefix(k, "{shop-a}:") || strings.HasPrefix(k, "{shop-b}:"), k)
	}
	ttl := func(key string) time.Duration {
		d, err := rdb.PTTL(ctx, key).Result()
		require.NoError(t, err)
		return d
	}
	assert.InDelta(t, time.Hour, ttl("{shop-a}:res:r1"), float64(time.Minute), "resolved: kept for the retention")
	assert.Equal(t, time.Duration(-1), ttl("{shop-a}:res:r2"), "live: kept until resolved")
	assert.Equal(t, time.Duration(-1), ttl("{shop-a}:stock:mug"))
	assert.InDelta(t, time.Hour, ttl("{shop-a}:adj:adj-1"), float64(time.Minute))
	assert.InDelta(t, redisinventory.DefaultRetention, ttl("{shop-b}:adj:adj-1"), float64(time.Minute))
}
