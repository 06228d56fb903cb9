package sqlinventory_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
)

// brokenRowsSQLite returns a testkit.FaultySQLite database with the inventory schema,
// whose query results the returned faults break (testkit.RowsLost).
func brokenRowsSQLite(t *testing.T) (*bun.DB, *testkit.SQLiteFaults) {
	t.Helper()
	db, f := testkit.FaultySQLite(t)
	require.NoError(t, sqlinventory.CreateSchema(context.Background(), db))
	return db, f
}

// TestReserveStockRowsLost: a Reserve (through the group commit) whose read of the stock
// rows it locks loses its connection while the rows arrive fails as the database being
// unavailable, not as unknown SKUs, and changes nothing: the stock as it was, no
// reservation. Its retry reserves.
func TestReserveStockRowsLost(t *testing.T) {
	ctx := context.Background()
	db, r := brokenRowsSQLite(t)
	inv := testkit.Must(inventory.New(sqlinventory.New(db)))(t)
	for _, sku := range []string{"a", "b"} {
		_, err := inv.SetStock(ctx, inventory.StockSetting{SKU: sku, OnHand: 10})
		require.NoError(t, err)
	}
	req := inventory.ReserveRequest{ID: "r1", Lines: []inventory.Line{{SKU: "a", Qty: 2}, {SKU: "b", Qty: 3}}, TTL: time.Hour}

	r.Arm(testkit.RowsLost, "SELECT sku, available, buyer_limit FROM inventory_stock")
	_, err := inv.Reserve(ctx, req)
	require.NotEmpty(t, r.Disarm(), "the read of the stock rows")
	testkit.RequireConnReset(t, err, inventory.ErrUnknownSKU, inventory.ErrInsufficientStock)

	_, err = inv.Get(ctx, "r1")
	require.ErrorIs(t, err, inventory.ErrReservationNotFound)
	for _, sku := range []string{"a", "b"} {
		st := testkit.Must(inv.Stock(ctx, sku))(t)
		assert.Equal(t, inventory.Stock{SKU: sku, OnHand: 10, Available: 10}, st, sku)
	}

	got, err := inv.Reserve(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, inventory.StateReserved, got.State)
	assert.Equal(t, int64(8), testkit.Must(inv.Stock(ctx, "a"))(t).Available)
	assert.Equal(t, int64(7), testkit.Must(inv.Stock(ctx, "b"))(t).Available)
}
