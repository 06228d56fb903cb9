package commerce_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// withFailing rebuilds e's payments and checkout on e.DB with a testkit.FailStatement (the
// inventory, coupons and ledger join checkout's transactions, and so meet it too), and
// returns it.
func withFailing(t *testing.T, e *commercetest.Env) *testkit.FailStatement {
	t.Helper()
	f := &testkit.FailStatement{}
	db := e.DB.WithQueryHook(f)
	now := e.Clock.Now
	e.Payments = testkit.Must(payment.New(db, e.Gateway, payment.WithClock(now), payment.WithWebhookVerifier(e.PG.WebhookVerifier())))(t)
	e.Reconciler = testkit.Must(payment.NewReconciler(e.Payments, payment.WithThreshold(0)))(t)
	writer := testkit.Must(outbox.NewWriter(outbox.WithClock(now)))(t)
	e.Service = testkit.Must(commerce.New(commerce.Config{
		DB: db, Inventory: e.Inventory, Coupons: e.Coupons, Ledger: e.Ledger, Payments: e.Payments,
		Reconciler: e.Reconciler, Outbox: writer, Relay: e.Relay,
	}, commerce.WithClock(now)))(t)
	return f
}

// TestCancelRefundedByOtherMeansReadFails: a paid order whose payment was refunded in
// full by other means (an operator's refund) is cancelled; its refund is refused as the
// payment is not refundable, and the read of the payment that would tell why (refunded:
// done) fails. The cancellation fails as the database being unavailable, not as a payment
// that is not refundable, and changes nothing more: the order CANCELLING, no refund made.
// Its retry completes it.
func TestCancelRefundedByOtherMeansReadFails(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		f := withFailing(t, e)
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 0, 0)
		o := pay(t, e, place(t, e, b, sku, 1, 0), "tok_ok")
		_, err := e.Payments.Refund(ctx, payment.RefundRequest{RefundID: "goodwill-" + o.ID, PaymentID: o.PaymentID,
			Amount: 10_000, Reason: "goodwill"})
		require.NoError(t, err)

		// The payment's reads: the refusal's, then refund's own.
		f.Arm(2, "SELECT", "payment_payments")
		_, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.NotEmpty(t, f.Disarm(), "the payment was read twice")
		testkit.RequireConnReset(t, err, payment.ErrNotRefundable, payment.ErrRefundRejected, commerce.ErrRefundRejected)

		assert.Equal(t, commerce.StatusCancelling, order(t, e, o.ID).Status)
		p := paymentOf(t, e, o.PaymentID)
		assert.Equal(t, payment.StateRefunded, p.State)
		assert.Equal(t, int64(10_000), p.Refunded)
		refunds, err := e.Payments.Refunds(ctx, o.PaymentID)
		require.NoError(t, err)
		require.Len(t, refunds, 1, "the operator's refund only")
		assert.Equal(t, int64(10_000), e.PG.Stats().CanceledAmount)

		got, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusCancelled, got.Status)
		requireStock(t, e, sku, 10, 0, 0)
		assert.Equal(t, int64(10_000), e.PG.Stats().CanceledAmount, "nothing refunded twice")
		e.RequireClean(t)
	})
}

// TestDeclinedTopUpWriteFails: a top-up the PG declines, whose move to FAILED fails (its
// UPDATE, outside any transaction, meets a reset connection), fails as the database being
// unavailable, so that its client retries: the top-up stays PAYING on its declined
// payment, nothing credited, and the retry fails it.
func TestDeclinedTopUpWriteFails(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		f := withFailing(t, e)
		user := e.ID("user")
		req := commerce.TopUpRequest{UserID: user, Amount: 5_000, Method: payment.MethodCard, Token: pgsim.TokenDecline,
			IdempotencyKey: "t1"}
		f.Arm(1, "UPDATE", "commerce_topups")
		_, err := e.Service.TopUp(ctx, req)
		require.NotEmpty(t, f.Disarm(), "the top-up's UPDATE")
		testkit.RequireConnReset(t, err, payment.ErrDeclined)

		var id string
		require.NoError(t, e.DB.NewSelect().Table("commerce_topups").Column("id").Where("user_id = ?", user).Scan(ctx, &id))
		tu := testkit.Must(e.Service.GetTopUp(ctx, id, commerce.Actor{Admin: true}))(t)
		assert.Equal(t, commerce.TopUpPaying, tu.Status)
		assert.Equal(t, payment.StateDeclined, paymentOf(t, e, tu.PaymentID).State)
		assert.Equal(t, ledger.Balance{}, balance(t, e, user))

		tu, err = e.Service.TopUp(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpFailed, tu.Status)
		assert.Equal(t, ledger.Balance{}, balance(t, e, user))
		e.RequireClean(t)
	})
}

// TestSweepListingsFail: Recover and Expire, whose listing of the orders (and top-ups) to
// visit fails, fail as the database being unavailable, having visited nothing.
func TestSweepListingsFail(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		f := withFailing(t, e)
		sku := e.Product(t, 1_000, 10)
		o := place(t, e, newBuyer(t, e, 0, 0), sku, 1, 0)
		e.Clock.Advance(time.Hour) // past its expiry

		for _, c := range []struct {
			name  string
			n     int
			match string
			call  func() error
		}{
			{"Recover orders", 1, "commerce_orders", func() error { _, err := e.Service.Recover(ctx); return err }},
			{"Recover top-ups", 1, "commerce_topups", func() error { _, err := e.Service.Recover(ctx); return err }},
			{"Expire", 1, "commerce_orders", func() error { _, err := e.Service.Expire(ctx); return err }},
		} {
			f.Arm(c.n, "SELECT", c.match)
			err := c.call()
			require.NotEmpty(t, f.Disarm(), c.name)
			testkit.RequireConnReset(t, err)
			assert.Equal(t, commerce.StatusPendingPayment, order(t, e, o.ID).Status, c.name)
		}
		n, err := e.Service.Expire(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		e.RequireClean(t)
	})
}

// TestUpdatePriceWriteFails: a price update whose UPDATE fails fails as the database
// being unavailable, the price unchanged.
func TestUpdatePriceWriteFails(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		f := withFailing(t, e)
		sku := e.Product(t, 1_000, 10)
		f.Arm(1, "UPDATE", "commerce_products")
		_, err := e.Service.UpdatePrice(ctx, sku, 2_000)
		require.NotEmpty(t, f.Disarm(), "the price's UPDATE")
		testkit.RequireConnReset(t, err)
		assert.Equal(t, int64(1_000), testkit.Must(e.Service.GetProduct(ctx, sku))(t).Price)
	})
}

// abandonedTopUp sends req while the PG is down: its payment is abandoned, and the top-up,
// whose ID it returns, stays PAYING on it.
func abandonedTopUp(t *testing.T, e *commercetest.Env, req commerce.TopUpRequest) string {
	t.Helper()
	e.PG.SetFault(pgsim.FaultUnavailable)
	_, err := e.Service.TopUp(ctx, req)
	e.PG.SetFault(pgsim.FaultNone)
	requireUnreached(t, err)
	var id string
	require.NoError(t, e.DB.NewSelect().Table("commerce_topups").Column("id").Where("user_id = ?", req.UserID).Scan(ctx, &id))
	return id
}

// TestTopUpRetryAbandonedReadFails: the client's retry of a top-up whose payment was
// abandoned (the PG not reached) reads that payment to make a new attempt; when that read
// fails, the retry fails as the database being unavailable, not as the PG unreached again
// (it was not called), and changes nothing: the top-up PAYING on its abandoned payment, no
// new attempt, nothing charged. The next retry makes the attempt and completes it.
func TestTopUpRetryAbandonedReadFails(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		f := withFailing(t, e)
		req := commerce.TopUpRequest{UserID: e.ID("user"), Amount: 5_000, Method: payment.MethodCard, Token: "tok_ok",
			IdempotencyKey: "t1"}
		id := abandonedTopUp(t, e, req)

		f.Arm(1, "SELECT", "payment_payments")
		_, err := e.Service.TopUp(ctx, req)
		require.NotEmpty(t, f.Disarm(), "the abandoned payment's read")
		testkit.RequireConnReset(t, err, payment.ErrAbandoned, payment.ErrGatewayUnavailable)

		tu := testkit.Must(e.Service.GetTopUp(ctx, id, commerce.Actor{Admin: true}))(t)
		assert.Equal(t, commerce.TopUpPaying, tu.Status)
		assert.Equal(t, "pay-"+id, tu.PaymentID, "no new attempt")
		assert.Equal(t, payment.StateAbandoned, paymentOf(t, e, tu.PaymentID).State)
		assert.Len(t, testkit.Must(e.Payments.ByOrder(ctx, id))(t), 1)
		assert.Zero(t, e.PG.Stats().Charges)
		assert.Equal(t, ledger.Balance{}, balance(t, e, req.UserID))

		tu, err = e.Service.TopUp(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpCompleted, tu.Status)
		assert.Equal(t, "pay-"+id+"-2", tu.PaymentID)
		assert.Equal(t, ledger.Balance{Available: 5_000, Total: 5_000}, balance(t, e, req.UserID))
		e.RequireClean(t)
	})
}

// TestTopUpRetryVoidedReadFails is TestTopUpRetryAbandonedReadFails for an abandoned
// payment the PG approved all the same, and that was given back (voided): the read that
// fails is the one telling it was voided.
func TestTopUpRetryVoidedReadFails(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		f := withFailing(t, e)
		req := commerce.TopUpRequest{UserID: e.ID("user"), Amount: 5_000, Method: payment.MethodCard, Token: "tok_ok",
			IdempotencyKey: "t1"}
		id := abandonedTopUp(t, e, req)
		approveAbandoned(t, e, "pay-"+id, id, req.Amount, false)

		f.Arm(1, "SELECT", "payment_refunds")
		_, err := e.Service.TopUp(ctx, req)
		require.NotEmpty(t, f.Disarm(), "the read of the payment's void")
		testkit.RequireConnReset(t, err, payment.ErrAbandoned, payment.ErrGatewayUnavailable)

		tu := testkit.Must(e.Service.GetTopUp(ctx, id, commerce.Actor{Admin: true}))(t)
		assert.Equal(t, commerce.TopUpPaying, tu.Status)
		assert.Equal(t, "pay-"+id, tu.PaymentID, "no new attempt")
		assert.Len(t, testkit.Must(e.Payments.ByOrder(ctx, id))(t), 1)
		assert.Equal(t, ledger.Balance{}, balance(t, e, req.UserID))

		tu, err = e.Service.TopUp(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, []any{commerce.TopUpCompleted, "pay-" + id + "-2"}, []any{tu.Status, tu.PaymentID})
		assert.Equal(t, ledger.Balance{Available: 5_000, Total: 5_000}, balance(t, e, req.UserID))
		e.RequireClean(t)
	})
}

// TestPlaceRefusedReadFails: a placement refused inside its transaction (the buyer lacks
// the points it asks to spend) reads the order again, in case a concurrent placement with
// the same key committed it, and that read fails. The placement answers the database being
// unavailable, not the refusal: it cannot tell whether the order exists. It keeps the
// reservation the key may yet need (a racing call's order would hold it), and the retry
// with the key answers the refusal and gives the units back; no order is placed.
func TestPlaceRefusedReadFails(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		f := withFailing(t, e)
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 0, 0)
		req := commerce.PlaceOrderRequest{UserID: b.user, IdempotencyKey: "k", Points: 1_000,
			Lines: []commerce.Line{{ProductID: sku, Qty: 1}}}

		f.Arm(1, "FROM commerce_orders AS o", "JOIN commerce_order_lines")
		_, err := e.Service.PlaceOrder(ctx, req)
		require.Contains(t, f.Disarm(), "commerce_orders", "the order's read after the refusal")
		testkit.RequireConnReset(t, err, commerce.ErrInsufficientPoints)

		_, err = e.Service.PlaceOrder(ctx, req)
		require.ErrorIs(t, err, commerce.ErrInsufficientPoints)
		requireStock(t, e, sku, 10, 0, 0)
		orders, err := e.Service.ListOrders(ctx, b.user, commerce.OrderQuery{})
		require.NoError(t, err)
		assert.Empty(t, orders.Orders)
	})
}
