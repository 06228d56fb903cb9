package commerce_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// TestPlaceRetryLaterHoldsEverythingUntilOneDeadline: PlaceOrder crashes after the stock
// was reserved (with the Redis inventory the reservation is taken before the transaction,
// and kept for the retry), and the client retries with the same key ten minutes later. The
// order placed then must hold its units, points and coupon until one deadline, its expiry
// plus the payment window, as every order does: a payment begun just before the order's
// expiry and approved just before that deadline pays the order (the last unit), instead of
// finding the units gone and being refunded.
func TestPlaceRetryLaterHoldsEverythingUntilOneDeadline(t *testing.T) {
	hook := &commercetest.Hook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 1)
		b := newBuyer(t, e, 1_000, 1_000)
		req := commerce.PlaceOrderRequest{UserID: b.user, Lines: []commerce.Line{{ProductID: sku, Qty: 1}},
			CouponID: b.coupon, Points: 500, IdempotencyKey: e.ID("place")}
		hook.FailAt(commerce.StepPlaceCommit)
		_, err := e.Service.PlaceOrder(ctx, req)
		require.ErrorIs(t, err, commerce.ErrInjected)

		e.Clock.Advance(10 * time.Minute) // the client retries later
		o, err := e.Service.PlaceOrder(ctx, req)
		require.NoError(t, err)
		require.Equal(t, commerce.StatusPendingPayment, o.Status)

		deadline := o.ExpiresAt.Add(commerce.DefaultPaymentWindow)
		res, err := e.Inventory.Get(ctx, o.ID)
		require.NoError(t, err)
		assert.WithinDuration(t, deadline, res.ExpiresAt, time.Millisecond, "the units are held until the order's deadline")
		h, err := e.Ledger.LookupHold(ctx, "hold-"+o.ID)
		require.NoError(t, err)
		assert.WithinDuration(t, deadline, h.Deadline, time.Millisecond, "the points are held until the order's deadline")
		reds, err := e.Coupons.Redemptions(ctx, o.ID)
		require.NoError(t, err)
		require.Len(t, reds, 1)
		assert.WithinDuration(t, deadline, reds[0].HoldDeadline, time.Millisecond, "the coupon is held until the order's deadline")

		// The buyer pays a minute before the order expires; the PG does not answer at once.
		e.Clock.Advance(o.ExpiresAt.Add(-time.Minute).Sub(e.Clock.Now()))
		e.PG.SetFault(pgsim.FaultError)
		got := pay(t, e, o, "tok_ok")
		require.Equal(t, commerce.StatusPaying, got.Status)
		e.PG.SetFault(pgsim.FaultNone)

		// It approves a minute before the deadline; the sweepers ran meanwhile, as Run's do.
		e.Clock.Advance(deadline.Add(-time.Minute).Sub(e.Clock.Now()))
		_, err = e.Inventory.Sweep(ctx)
		require.NoError(t, err)
		_, err = e.Ledger.Sweep(ctx)
		require.NoError(t, err)
		_, err = e.Coupons.Sweep(ctx)
		require.NoError(t, err)
		e.Settle(t)

		got = order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPaid, got.Status, "failure code %q", got.FailureCode)
		assert.Empty(t, got.Step)
		requireStock(t, e, sku, 0, 0, 1)
		assert.Equal(t, coupon.StateUsed, couponState(t, e, b.coupon))
		assert.Equal(t, ledger.Balance{Available: 585, Total: 585}, balance(t, e, b.user))
		assert.Equal(t, 1, e.PG.Charges(got.PaymentID))
		assert.Zero(t, e.PG.Stats().CanceledAmount, "nothing charged and refunded")
		e.RequireClean(t)
		e.RequireDelivered(t)
	}, commerce.WithFaultHook(hook.Func))
}
