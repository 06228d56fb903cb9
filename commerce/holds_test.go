package commerce

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/hold/holdtest"
	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
	"github.com/commercekit/commercekit/ledger"
)

// TestHoldersConform runs the hold contract's suite against checkout's three adapters, on
// real stores: the SQL inventory and the plain Redis one (outside SQL), the ledger, coupons.
func TestHoldersConform(t *testing.T) {
	ctx := context.Background()
	sqlite := func(t *testing.T) (*bun.DB, *testclock.Clock) {
		db := testenv.SQLite(t)
		require.NoError(t, CreateAllSchemas(ctx, db, sqlinventory.CreateSchema, sqlcoupon.CreateSchema))
		return db, testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	}
	stock := func(t *testing.T, backend func(db *bun.DB) inventory.Backend) {
		db, clock := sqlite(t)
		inv := testkit.Must(inventory.New(backend(db), inventory.WithClock(clock.Now)))(t)
		var n atomic.Int64
		holdtest.Run(t, holdtest.Harness[stockHold]{
			Holder: stockHolds{inv},
			Request: func(t *testing.T) stockHold {
				sku := fmt.Sprintf("sku-%d", n.Add(1))
				_, err := inv.SetStock(ctx, inventory.StockSetting{SKU: sku, OnHand: 5})
				require.NoError(t, err)
				return stockHold{Buyer: "buyer", Lines: []inventory.Line{{SKU: sku, Qty: 2}}}
			},
			Advance: clock.Advance,
		})
	}
	t.Run("stock/SQL", func(t *testing.T) {
		stock(t, func(db *bun.DB) inventory.Backend { return sqlinventory.New(db) })
	})
	t.Run("stock/Redis", func(t *testing.T) {
		rdb := testenv.Redis(t)
		stock(t, func(*bun.DB) inventory.Backend { return testkit.Must(redisinventory.New(rdb))(t) })
	})
	t.Run("points", func(t *testing.T) {
		db, clock := sqlite(t)
		led := testkit.Must(ledger.New(db, ledger.WithClock(clock.Now)))(t)
		var n atomic.Int64
		holdtest.Run(t, holdtest.Harness[pointsHold]{
			Holder: pointHolds{led},
			Request: func(t *testing.T) pointsHold {
				user := fmt.Sprintf("user-%d", n.Add(1))
				_, err := led.Charge(ctx, ledger.ChargeRequest{ID: "charge-" + user, User: user, Amount: 100, Reference: "test"})
				require.NoError(t, err)
				return pointsHold{User: user, Amount: 30}
			},
			Advance: clock.Advance,
		})
	})
	t.Run("coupon", func(t *testing.T) {
		db, clock := sqlite(t)
		coup := testkit.Must(coupon.New(db, sqlcoupon.New(), coupon.WithClock(clock.Now)))(t)
		_, err := coup.CreateTemplate(ctx, coupon.Template{
			ID: "tpl", Name: "1,000 off", Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 1000}, TotalQuantity: 100, PerUserLimit: 100,
		})
		require.NoError(t, err)
		var n atomic.Int64
		holdtest.Run(t, holdtest.Harness[couponHold]{
			Holder: couponHolds{coup: coup, now: clock.Now},
			Request: func(t *testing.T) couponHold {
				c, err := coup.Issue(ctx, "tpl", "user", fmt.Sprintf("issue-%d", n.Add(1)))
				require.NoError(t, err)
				return couponHold{CouponID: c.ID, User: "user", OrderAmount: 10_000}
			},
			Advance: clock.Advance,
		})
	})
}
