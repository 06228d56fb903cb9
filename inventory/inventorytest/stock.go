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
