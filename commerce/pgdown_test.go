package commerce_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/payment/resilient"
)

// withBreaker puts e's gateway behind the resilient policies (no retry; a breaker opening
// at the first failure for openFor) and rebuilds e's payments and checkout on it.
func withBreaker(t *testing.T, e *commercetest.Env, openFor time.Duration) *resilient.Gateway {
	t.Helper()
	gw := testkit.Must(resilient.Wrap(e.Gateway, resilient.WithRetries(1, time.Millisecond, time.Millisecond),
		resilient.WithBreaker(1, 1, openFor), resilient.WithHalfOpenSuccesses(1)))(t)
	now := e.Clock.Now
	e.Payments = testkit.Must(payment.New(e.DB, gw, payment.WithClock(now), payment.WithWebhookVerifier(e.PG.WebhookVerifier())))(t)
	e.Reconciler = testkit.Must(payment.NewReconciler(e.Payments, payment.WithThreshold(0)))(t)
	writer := testkit.Must(outbox.NewWriter(outbox.WithClock(now)))(t)
	e.Service = testkit.Must(commerce.New(commerce.Config{
		DB: e.DB, Inventory: e.Inventory, Coupons: e.Coupons, Ledger: e.Ledger, Payments: e.Payments,
		Reconciler: e.Reconciler, Outbox: writer, Relay: e.Relay,
	}, commerce.WithClock(now)))(t)
	return gw
}

// requireHeld checks that o (2 units of sku, 2,000 points of 5,000, b's coupon) still holds
// everything it held when placed.
func requireHeld(t *testing.T, e *commercetest.Env, b buyer, sku string) {
	t.Helper()
	requireStock(t, e, sku, 8, 2, 0)
	assert.Equal(t, ledger.Balance{Available: 3_000, Held: 2_000, Total: 5_000}, balance(t, e, b.user))
	assert.Equal(t, coupon.StateReserved, couponState(t, e, b.coupon))
}

// TestPayWhileBreakerOpen: while the PG's circuit breaker is open, Pay answers at once that
// the PG is unavailable (errcode.ErrUnavailable, retry after the breaker's remaining delay),
// without claiming the order, recording a payment or calling the PG; the order keeps its
// holds, and once the PG is back the same request pays it.
func TestPayWhileBreakerOpen(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		const openFor = 500 * time.Millisecond
		gw := withBreaker(t, e, openFor)
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 5_000, 3_000)
		o := place(t, e, b, sku, 2, 2_000)

		e.PG.SetFault(pgsim.FaultUnavailable)
		_, err := gw.Approve(ctx, payment.ApproveRequest{PaymentID: "probe", OrderID: "probe", Amount: 1, Currency: "KRW", Method: payment.MethodCard})
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		require.Equal(t, resilient.BreakerOpen, gw.BreakerState())
		calls := e.PG.Stats().ApproveCalls

		_, err = e.Service.Pay(ctx, cardPayment(o, "tok_ok"))
		require.ErrorIs(t, err, errcode.ErrUnavailable)
		assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		assert.Equal(t, errcode.DependencyUnavailable, errcode.CodeOf(err))
		wait := errcode.RetryAfter(err, 0)
		assert.Positive(t, wait)
		assert.LessOrEqual(t, wait, openFor)
		assert.Equal(t, calls, e.PG.Stats().ApproveCalls, "the PG is not called")
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPendingPayment, got.Status)
		assert.Empty(t, got.PaymentID)
		assert.Empty(t, got.Step)
		assert.Empty(t, testkit.Must(e.Payments.ByOrder(ctx, o.ID))(t), "no payment recorded")
		requireHeld(t, e, b, sku)

		e.PG.SetFault(pgsim.FaultNone)
		require.Eventually(t, func() bool { return gw.Ready() == nil }, 10*time.Second, 10*time.Millisecond)
		o = pay(t, e, o, "tok_ok")
		assert.Equal(t, commerce.StatusPaid, o.Status)
		assert.Equal(t, 1, e.PG.Charges(o.PaymentID))
		requireStock(t, e, sku, 8, 0, 2)
		e.RequireClean(t)
	})
}
