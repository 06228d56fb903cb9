package commerce_test

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
)

// flashSale has buyers race for units, each placing an order of one unit with a coupon of
// 1,000 and 500 points, and paying the rest by card. Exactly `units` orders must be paid,
// every other buyer turned away with ErrOutOfStock, and the audit clean.
func flashSale(t *testing.T, e *commercetest.Env, buyers, units, workers int) {
	sku := e.Product(t, 10_000, int64(units))
	tpl := e.CouponTemplate(t, 1_000)
	bs := make([]buyer, buyers)
	testkit.Parallel(buyers, workers, func(i int) {
		user := e.ID("buyer")
		e.GivePoints(t, user, 800)
		bs[i] = buyer{user: user, coupon: e.GiveCoupon(t, tpl, user)}
	})

	var paid, soldOut atomic.Int64
	testkit.Parallel(buyers, workers, func(i int) {
		b := bs[i]
		o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: b.user, CouponID: b.coupon, Points: 500,
			Lines: []commerce.Line{{ProductID: sku, Qty: 1}}, IdempotencyKey: "sale"})
		if errors.Is(err, commerce.ErrOutOfStock) {
			soldOut.Add(1)
			return
		}
		if !assert.NoError(t, err) {
			return
		}
		o, err = e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: b.user, Method: payment.MethodCard,
			Token: "tok_ok", IdempotencyKey: "sale"})
		if assert.NoError(t, err) && assert.Equal(t, commerce.StatusPaid, o.Status) {
			paid.Add(1)
		}
	})

	assert.Equal(t, int64(units), paid.Load())
	assert.Equal(t, int64(buyers-units), soldOut.Load())
	requireStock(t, e, sku, 0, 0, int64(units))
	assert.Equal(t, units, e.PG.Stats().Charges)
	assert.Equal(t, int64(units)*8_500, totalCharged(e))
	rep := e.RequireClean(t)
	assert.Equal(t, units, rep.Orders)
	e.RequireDelivered(t)
}

func totalCharged(e *commercetest.Env) int64 {
	var sum int64
	err := e.DB.NewSelect().Table("payment_payments").ColumnExpr("COALESCE(SUM(amount), 0)").
		Where("state = ?", payment.StateApproved).Scan(ctx, &sum)
	if err != nil {
		panic(err)
	}
	return sum
}

// TestFlashSale: 2,000 buyers for 100 units on MySQL + Redis + Kafka, and on MySQL with the
// SQL inventory (every reservation a row lock on the one hot stock row).
func TestFlashSale(t *testing.T) {
	t.Run("MySQL+Redis+Kafka", func(t *testing.T) { flashSale(t, commercetest.MySQL(t), 2_000, 100, 64) })
	t.Run("MySQL+Kafka", func(t *testing.T) { flashSale(t, commercetest.MySQLSQLInventory(t), 2_000, 100, 64) })
}

// TestFlashSaleSQLite: the embedded configuration serialises every writer on one
// connection; 300 buyers for 30 units still interleave at every statement.
func TestFlashSaleSQLite(t *testing.T) {
	flashSale(t, commercetest.SQLite(t), 300, 30, 16)
}

// Pay and Cancel race on the same orders (each twice), then Cancel and expiry on others:
// exactly one wins each order, and whatever the outcome the store is consistent.
func TestPayCancelExpireRace(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		const n = 30
		sku := e.Product(t, 10_000, 2*n)
		place := func() []commerce.Order {
			orders := make([]commerce.Order, n)
			for i := range orders {
				orders[i] = place(t, e, newBuyer(t, e, 1_000, 1_000), sku, 1, 1_000)
			}
			return orders
		}
		ok := func(err error) bool {
			return err == nil || errors.Is(err, commerce.ErrInvalidState) || errors.Is(err, commerce.ErrOrderExpired)
		}
		paying := place()
		testkit.Parallel(4*n, 12, func(i int) {
			o := paying[i/4]
			var err error
			if i%2 == 0 {
				_, err = e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: o.UserID, Method: payment.MethodCard,
					Token: "tok_ok", IdempotencyKey: "race"})
			} else {
				_, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: o.UserID})
			}
			assert.True(t, ok(err), "order %s: %v", o.ID, err)
		})
		e.Clock.Advance(commerce.DefaultOrderExpiry)
		expiring := place()
		e.Clock.Advance(commerce.DefaultOrderExpiry)
		testkit.Parallel(2*n, 12, func(i int) {
			o := expiring[i/2]
			var err error
			if i%2 == 0 {
				_, err = e.Service.Expire(ctx)
			} else {
				_, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: o.UserID})
			}
			assert.True(t, ok(err), "order %s: %v", o.ID, err)
		})
		_, err := e.Service.Recover(ctx)
		require.NoError(t, err)

		var paid int64
		for _, o := range append(paying, expiring...) {
			got := order(t, e, o.ID)
			require.Empty(t, got.Step)
			b := balance(t, e, o.UserID)
			switch got.Status {
			case commerce.StatusPaid:
				paid++
				assert.Equal(t, ledger.Balance{Available: 80, Total: 80}, b) // 8,000 paid by card: 80 reward
			case commerce.StatusCancelled, commerce.StatusExpired:
				assert.Equal(t, ledger.Balance{Available: 1_000, Total: 1_000}, b)
			default:
				t.Errorf("order %s ended %s", o.ID, got.Status)
			}
		}
		requireStock(t, e, sku, 2*n-paid, 0, paid) // units of cancelled paid orders were returned
		e.RequireClean(t)
	})
}

// Concurrent duplicates of one PlaceOrder make one order and one reservation.
func TestConcurrentPlaceReplays(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 1_000, 1_000)
		ids := make([]string, 16)
		testkit.Parallel(len(ids), 8, func(i int) {
			o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: b.user, CouponID: b.coupon, Points: 1_000,
				Lines: []commerce.Line{{ProductID: sku, Qty: 3}}, IdempotencyKey: "same"})
			if assert.NoError(t, err) {
				ids[i] = o.ID
			}
		})
		for _, id := range ids {
			assert.Equal(t, ids[0], id)
		}
		requireStock(t, e, sku, 7, 3, 0)
		assert.Equal(t, ledger.Balance{Held: 1_000, Total: 1_000}, balance(t, e, b.user))
		e.RequireClean(t)
	})
}
