package sqlinventory_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
)

// TestAdjustCut: a positive Adjust, its MySQL connection cut before and after each of its
// statements in turn (the adjustment's INSERT, the UPDATE bounded by MaxOnHand, the read
// of the stock, COMMIT; and, where that UPDATE matches no row, the locking read that says
// why). Then the retry with the same adjustment leaves exactly the stock the adjustment
// asks for, applied once (never twice, whether or not the cut call committed): "fits" ends
// exactly at MaxOnHand, "refused" one unit past it is refused again and changes nothing.
func TestAdjustCut(t *testing.T) {
	ctx := context.Background()
	db, linked, link := testenv.LinkedMySQL(t)
	require.NoError(t, sqlinventory.CreateSchema(ctx, db))
	inv := testkit.Must(inventory.New(sqlinventory.New(db)))(t)
	cutInv := testkit.Must(inventory.New(sqlinventory.New(linked)))(t)
	const maxOnHand = int64(inventory.MaxOnHand)

	// prepare gives sku MaxOnHand-12 on hand (3 of them reserved) and 2 sold.
	prepare := func(t *testing.T, sku string) {
		t.Helper()
		_, err := inv.SetStock(ctx, inventory.StockSetting{SKU: sku, OnHand: maxOnHand - 10})
		require.NoError(t, err)
		_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "paid-" + sku, Lines: []inventory.Line{{SKU: sku, Qty: 2}}, TTL: time.Hour})
		require.NoError(t, err)
		require.NoError(t, inv.Commit(ctx, "paid-"+sku))
		_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "live-" + sku, Lines: []inventory.Line{{SKU: sku, Qty: 3}}, TTL: time.Hour})
		require.NoError(t, err)
		requireAdjusted(t, inv, db, sku, [5]int64{maxOnHand - 12, maxOnHand - 15, 3, 2, 0})
	}
	for _, c := range []struct {
		name  string
		delta int64
		// want: on hand, available, reserved, sold, adjustment rows of the SKU, at the end.
		want    [5]int64
		refused bool
	}{
		{name: "fits", delta: 12, want: [5]int64{maxOnHand, maxOnHand - 3, 3, 2, 1}},
		{name: "refused", delta: 13, want: [5]int64{maxOnHand - 12, maxOnHand - 15, 3, 2, 0}, refused: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			adjustment := func(sku string) inventory.Adjustment {
				return inventory.Adjustment{ID: "adj-" + sku, SKU: sku, Delta: c.delta, Reason: "restock"}
			}
			answer := func(t *testing.T, err error) {
				t.Helper()
				if c.refused {
					require.ErrorIs(t, err, inventory.ErrInvalidQuantity)
				} else {
					require.NoError(t, err)
				}
			}
			sku := c.name + "-clean"
			prepare(t, sku)
			link.Arm(nil, false)
			_, err := cutInv.Adjust(ctx, adjustment(sku))
			_, statements := link.Disarm()
			answer(t, err)
			requireAdjusted(t, inv, db, sku, c.want)
			require.Contains(t, strings.Join(statements, "\n"), "available + reserved + ", "the UPDATE bounded by MaxOnHand")
			t.Logf("%d statements: %q", len(statements), statements)
			for _, p := range testenv.CutPoints(statements, nil) {
				sku := fmt.Sprintf("%s-%t-%d", c.name, p.After, p.N)
				t.Run(p.String(), func(t *testing.T) {
					prepare(t, sku)
					link.Arm(p.Match(), p.After)
					_, err := cutInv.Adjust(ctx, adjustment(sku))
					cut, _ := link.Disarm()
					require.Len(t, cut, 1)
					if err != nil && !(c.refused && errors.Is(err, inventory.ErrInvalidQuantity)) {
						// database/sql opens a new connection for a transaction whose BEGIN
						// met a dropped one: that cut may cost the caller nothing.
						require.ErrorIs(t, err, errcode.ErrUnavailable, "cut at %q", cut[0])
					}
					_, err = cutInv.Adjust(ctx, adjustment(sku))
					answer(t, err)
					requireAdjusted(t, inv, db, sku, c.want)
					_, err = inv.Adjust(ctx, adjustment(sku))
					answer(t, err)
					requireAdjusted(t, inv, db, sku, c.want)
				})
			}
		})
	}
}

// requireAdjusted checks sku's on hand, available, reserved and sold counts and the
// number of its adjustments.
func requireAdjusted(t *testing.T, inv *inventory.Inventory, db *bun.DB, sku string, want [5]int64) {
	t.Helper()
	ctx := context.Background()
	st, err := inv.Stock(ctx, sku)
	require.NoError(t, err)
	var adjustments int64
	require.NoError(t, db.QueryRowContext(ctx, `SELECT COUNT(*) FROM inventory_adjustments WHERE sku = ?`, sku).Scan(&adjustments))
	assert.Equal(t, want, [5]int64{st.OnHand, st.Available, st.Reserved, st.Sold, adjustments},
		"%s: on hand, available, reserved, sold, adjustments", sku)
}
