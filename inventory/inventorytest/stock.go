package inventorytest

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/inventory"
)

func testStock(t *testing.T, h Harness) {
	inv, _, _ := newInv(t, h)
	ctx := context.Background()

	st, err := inv.SetStock(ctx, inventory.StockSetting{SKU: "tee-m", OnHand: 10})
	require.NoError(t, err)
	assert.Equal(t, inventory.Stock{SKU: "tee-m", OnHand: 10, Available: 10}, st)
	assert.Equal(t, st, stock(t, inv, "tee-m"))

	st, err = inv.SetStock(ctx, inventory.StockSetting{SKU: "tee-m", OnHand: 7, BuyerLimit: 5})
	require.NoError(t, err)
	assert.Equal(t, inventory.Stock{SKU: "tee-m", OnHand: 7, Available: 7, BuyerLimit: 5}, st)

	// Reserved units stay reserved when the on-hand count is set.
	reserve(t, inv, "r1", "buyer-1", lines("tee-m", 3)...)
	_, err = inv.SetStock(ctx, inventory.StockSetting{SKU: "tee-m", OnHand: 2, BuyerLimit: 5})
	e := requireAs[*inventory.InsufficientStockError](t, err, inventory.ErrInsufficientStock)
	assert.Equal(t, inventory.InsufficientStockError{SKU: "tee-m", Requested: 5, Available: 4}, *e)
	wantStock(t, inv, "tee-m", 4, 3, 0)
	st, err = inv.SetStock(ctx, inventory.StockSetting{SKU: "tee-m", OnHand: 3})
	require.NoError(t, err)
	assert.Equal(t, inventory.Stock{SKU: "tee-m", OnHand: 3, Available: 0, Reserved: 3}, st)
	st, err = inv.SetStock(ctx, inventory.StockSetting{SKU: "tee-m", OnHand: 12, BuyerLimit: 5})
	require.NoError(t, err)
	assert.Equal(t, inventory.Stock{SKU: "tee-m", OnHand: 12, Available: 9, Reserved: 3, BuyerLimit: 5}, st)

	// Many SKUs in one call; unknown ones are absent, duplicates are fine.
	setStock(t, inv, "mug", 4, 0)
	m, err := inv.Stocks(ctx, []string{"mug", "tee-m", "nope", "mug"})
	require.NoError(t, err)
	assert.Equal(t, map[string]inventory.Stock{
		"mug":   {SKU: "mug", OnHand: 4, Available: 4},
		"tee-m": {SKU: "tee-m", OnHand: 12, Available: 9, Reserved: 3, BuyerLimit: 5},
	}, m)
	m, err = inv.Stocks(ctx, nil)
	require.NoError(t, err)
	assert.Empty(t, m)

	_, err = inv.Stock(ctx, "nope")
	assert.Equal(t, "nope", requireAs[*inventory.UnknownSKUError](t, err, inventory.ErrUnknownSKU).SKU)

	// Bad input changes nothing.
	for _, s := range []inventory.StockSetting{
		{SKU: "mug", OnHand: -1},
		{SKU: "mug", OnHand: inventory.MaxOnHand + 1},
		{SKU: "mug", OnHand: 1, BuyerLimit: -1},
	} {
		_, err := inv.SetStock(ctx, s)
		requireAs[*inventory.ValidationError](t, err, inventory.ErrInvalidQuantity)
	}
	for _, sku := range []string{"", "has space", "a,b", "a=b", strings.Repeat("x", 65), "ü"} {
		_, err := inv.SetStock(ctx, inventory.StockSetting{SKU: sku, OnHand: 1})
		requireAs[*inventory.ValidationError](t, err, inventory.ErrInvalidRequest)
	}
	_, err = inv.Stocks(ctx, make([]string, inventory.MaxStocksPerCall+1))
	require.ErrorIs(t, err, inventory.ErrInvalidRequest)
	wantStock(t, inv, "mug", 4, 0, 0)

	// The largest allowed count is exact.
	setStock(t, inv, "big", inventory.MaxOnHand, 0)
	reserve(t, inv, "r-big", "", lines("big", 999)...)
	wantStock(t, inv, "big", inventory.MaxOnHand-999, 999, 0)
}

func testAdjust(t *testing.T, h Harness) {
	inv, _, _ := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "mug", 5, 0)
	reserve(t, inv, "r1", "", lines("mug", 2)...)

	restock := inventory.Adjustment{ID: "adj-1", SKU: "mug", Delta: 10, Reason: "restock"}
	st, err := inv.Adjust(ctx, restock)
	require.NoError(t, err)
	assert.Equal(t, inventory.Stock{SKU: "mug", OnHand: 15, Available: 13, Reserved: 2}, st)

	// A replay applies nothing and returns the stock as it is now.
	reserve(t, inv, "r2", "", lines("mug", 1)...)
	st, err = inv.Adjust(ctx, restock)
	require.NoError(t, err)
	assert.Equal(t, inventory.Stock{SKU: "mug", OnHand: 15, Available: 12, Reserved: 3}, st)

	// The same ID with other content is a conflict.
	for _, a := range []inventory.Adjustment{
		{ID: "adj-1", SKU: "mug", Delta: 11, Reason: "restock"},
		{ID: "adj-1", SKU: "mug", Delta: 10, Reason: "correction"},
	} {
		_, err = inv.Adjust(ctx, a)
		e := requireAs[*inventory.ConflictError](t, err, inventory.ErrIdempotencyConflict)
		assert.Equal(t, inventory.ConflictError{Kind: "adjustment", Key: "adj-1", Err: inventory.ErrIdempotencyConflict}, *e)
	}

	// A correction may not take more than is available; a failed one leaves no trace.
	_, err = inv.Adjust(ctx, inventory.Adjustment{ID: "adj-2", SKU: "mug", Delta: -13, Reason: "shrinkage"})
	e := requireAs[*inventory.InsufficientStockError](t, err, inventory.ErrInsufficientStock)
	assert.Equal(t, inventory.InsufficientStockError{SKU: "mug", Requested: 13, Available: 12}, *e)
	wantStock(t, inv, "mug", 12, 3, 0)
	st, err = inv.Adjust(ctx, inventory.Adjustment{ID: "adj-2", SKU: "mug", Delta: -12, Reason: "shrinkage"})
	require.NoError(t, err)
	assert.Equal(t, inventory.Stock{SKU: "mug", OnHand: 3, Available: 0, Reserved: 3}, st)

	_, err = inv.Adjust(ctx, inventory.Adjustment{ID: "adj-3", SKU: "nope", Delta: 1, Reason: "restock"})
	requireAs[*inventory.UnknownSKUError](t, err, inventory.ErrUnknownSKU)

	for _, a := range []inventory.Adjustment{
		{ID: "adj-4", SKU: "mug", Delta: 0, Reason: "nothing"},
		{ID: "adj-4", SKU: "mug", Delta: inventory.MaxOnHand + 1, Reason: "too much"},
		{ID: "adj-4", SKU: "mug", Delta: 1, Reason: " "},
		{ID: "adj-4", SKU: "mug", Delta: 1, Reason: strings.Repeat("r", 256)},
		// Stored otherwise than given, a retry would be taken for another adjustment.
		{ID: "adj-4", SKU: "mug", Delta: 1, Reason: "recount\x00shelf-3"},
		{ID: "adj-4", SKU: "mug", Delta: 1, Reason: "recount \xff"},
		{ID: "", SKU: "mug", Delta: 1, Reason: "restock"},
		{ID: "adj-4", SKU: "", Delta: 1, Reason: "restock"},
	} {
		_, err := inv.Adjust(ctx, a)
		requireAs[*inventory.ValidationError](t, err, inventory.ErrInvalidRequest)
	}
	wantStock(t, inv, "mug", 0, 3, 0)
}

// testAdjustMaxOnHand: an adjustment may take the on-hand count (reserved units included,
// sold ones not) up to MaxOnHand and no further, whatever its delta; a refused one is a
// *ValidationError matching ErrInvalidQuantity, like SetStock past MaxOnHand, changes
// nothing and leaves no trace of its ID.
func testAdjustMaxOnHand(t *testing.T, h Harness) {
	inv, _, _ := newInv(t, h)
	ctx := context.Background()
	const maxOnHand = int64(inventory.MaxOnHand)
	refused := func(a inventory.Adjustment) {
		t.Helper()
		_, err := inv.Adjust(ctx, a)
		e := requireAs[*inventory.ValidationError](t, err, inventory.ErrInvalidQuantity)
		assert.Equal(t, "delta", e.Field)
	}
	adjusted := func(a inventory.Adjustment, want inventory.Stock) {
		t.Helper()
		st, err := inv.Adjust(ctx, a)
		require.NoError(t, err)
		assert.Equal(t, want, st)
		assert.Equal(t, want, stock(t, inv, a.SKU))
	}

	setStock(t, inv, "big", maxOnHand-10, 0)
	reserve(t, inv, "r1", "", lines("big", 3)...)

	// One past the limit, and the largest delta there is: refused, nothing changed.
	refused(inventory.Adjustment{ID: "adj-1", SKU: "big", Delta: 11, Reason: "restock"})
	refused(inventory.Adjustment{ID: "adj-2", SKU: "big", Delta: maxOnHand, Reason: "restock"})
	wantStock(t, inv, "big", maxOnHand-13, 3, 0)

	// Up to exactly the limit: accepted. The refused adj-1 left no record, so its ID with
	// another delta is no conflict.
	restock := inventory.Adjustment{ID: "adj-1", SKU: "big", Delta: 10, Reason: "restock"}
	adjusted(restock, inventory.Stock{SKU: "big", OnHand: maxOnHand, Available: maxOnHand - 3, Reserved: 3})
	refused(inventory.Adjustment{ID: "adj-3", SKU: "big", Delta: 1, Reason: "restock"})
	wantStock(t, inv, "big", maxOnHand-3, 3, 0)

	// A replay of the accepted adjustment still answers the stock as it is now.
	st, err := inv.Adjust(ctx, restock)
	require.NoError(t, err)
	assert.Equal(t, inventory.Stock{SKU: "big", OnHand: maxOnHand, Available: maxOnHand - 3, Reserved: 3}, st)

	// A negative delta at the limit is fine; sold units are off the shelf and do not count.
	adjusted(inventory.Adjustment{ID: "adj-4", SKU: "big", Delta: -5, Reason: "shrinkage"},
		inventory.Stock{SKU: "big", OnHand: maxOnHand - 5, Available: maxOnHand - 8, Reserved: 3})
	require.NoError(t, inv.Commit(ctx, "r1"))
	wantStock(t, inv, "big", maxOnHand-8, 0, 3)
	refused(inventory.Adjustment{ID: "adj-3", SKU: "big", Delta: 9, Reason: "restock"})
	adjusted(inventory.Adjustment{ID: "adj-3", SKU: "big", Delta: 8, Reason: "restock"},
		inventory.Stock{SKU: "big", OnHand: maxOnHand, Available: maxOnHand, Sold: 3})

	// A refused adjustment retried once there is room is applied.
	retry := inventory.Adjustment{ID: "adj-5", SKU: "big", Delta: 2, Reason: "found on shelf 3"}
	refused(retry)
	adjusted(inventory.Adjustment{ID: "adj-6", SKU: "big", Delta: -2, Reason: "damaged"},
		inventory.Stock{SKU: "big", OnHand: maxOnHand - 2, Available: maxOnHand - 2, Sold: 3})
	adjusted(retry, inventory.Stock{SKU: "big", OnHand: maxOnHand, Available: maxOnHand, Sold: 3})

	// The attack: SetStock(MaxOnHand), then Adjust(+MaxOnHand).
	setStock(t, inv, "mug", maxOnHand, 0)
	refused(inventory.Adjustment{ID: "adj-7", SKU: "mug", Delta: maxOnHand, Reason: "restock"})
	wantStock(t, inv, "mug", maxOnHand, 0, 0)
	wantStock(t, inv, "big", maxOnHand, 0, 3)
}
