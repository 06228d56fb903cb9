package commerce_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
)

// TestPayClaimRecordsThePaymentAtomically: the order's move to PAYING and its payment's
// REQUESTED record commit together or not at all. A crash inside the claim's transaction
// leaves the order PENDING_PAYMENT with no payment and nothing charged; a crash right after
// its commit leaves the payment on record, REQUESTED and never submitted, which the
// reconciler charges once; every replay answers the same.
func TestPayClaimRecordsThePaymentAtomically(t *testing.T) {
	hook := &commercetest.Hook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		b := newBuyer(t, e, 3_000, 1_000)
		o := place(t, e, b, sku, 2, 3_000)
		req := commerce.PayRequest{OrderID: o.ID, UserID: b.user, Method: payment.MethodCard, Token: "tok_visa",
			IdempotencyKey: "pay-" + o.ID}

		hook.FailAt(commerce.StepPayClaim)
		_, err := e.Service.Pay(ctx, req)
		require.ErrorIs(t, err, commerce.ErrInjected)
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPendingPayment, got.Status)
		assert.Empty(t, got.PaymentID)
		payments, err := e.Payments.ByOrder(ctx, o.ID)
		require.NoError(t, err)
		assert.Empty(t, payments, "the claim rolled back: no payment on record")
		assert.Zero(t, e.PG.Stats().ApproveCalls)

		hook.FailAt(commerce.StepPayPaying)
		_, err = e.Service.Pay(ctx, req)
		require.ErrorIs(t, err, commerce.ErrInjected)
		got = order(t, e, o.ID)
		require.Equal(t, commerce.StatusPaying, got.Status)
		p := paymentOf(t, e, got.PaymentID)
		assert.Equal(t, payment.StateRequested, p.State, "committed with the claim")
		assert.Equal(t, got.AmountDue, p.Amount)
		assert.Zero(t, e.PG.ApproveCalls(got.PaymentID), "the crash came before the PG was called")

		e.Settle(t) // the restart: the reconciler submits the payment, recovery completes the order
		paid := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPaid, paid.Status)
		for range 2 { // the client's retries answer the same
			again, err := e.Service.Pay(ctx, req)
			require.NoError(t, err)
			assert.Equal(t, paid, again)
		}
		assert.Equal(t, 1, e.PG.ApproveCalls(got.PaymentID))
		assert.Equal(t, 1, e.PG.Charges(got.PaymentID))
		requireStock(t, e, sku, 3, 0, 2)
		e.RequireClean(t)
	}, commerce.WithFaultHook(hook.Func))
}

// TestPayAndTopUpBadTokenChangeNothing: a token the payment package refuses (not UTF-8)
// fails the claim as a whole: the order stays PENDING_PAYMENT and the top-up is not
// recorded, with no payment, so the same request with a good token then succeeds.
func TestPayAndTopUpBadTokenChangeNothing(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		b := newBuyer(t, e, 0, 0)
		o := place(t, e, b, sku, 1, 0)
		req := commerce.PayRequest{OrderID: o.ID, UserID: b.user, Method: payment.MethodCard, Token: "tok\xff",
			IdempotencyKey: "pay-" + o.ID}
		_, err := e.Service.Pay(ctx, req)
		require.ErrorIs(t, err, commerce.ErrInvalidRequest)
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPendingPayment, got.Status)
		payments, err := e.Payments.ByOrder(ctx, o.ID)
		require.NoError(t, err)
		assert.Empty(t, payments)

		req.Token = "tok_visa"
		assert.Equal(t, commerce.StatusPaid, testkit.Must(e.Service.Pay(ctx, req))(t).Status)

		top := commerce.TopUpRequest{UserID: b.user, Amount: 5_000, Method: payment.MethodCard, Token: "tok\xff", IdempotencyKey: "top"}
		_, err = e.Service.TopUp(ctx, top)
		require.ErrorIs(t, err, commerce.ErrInvalidRequest)
		top.Token = "tok_visa" // another token: a recorded top-up would refuse it as a conflict
		tu, err := e.Service.TopUp(ctx, top)
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpCompleted, tu.Status)
		payments, err = e.Payments.ByOrder(ctx, tu.ID)
		require.NoError(t, err)
		assert.Len(t, payments, 1)
		assert.Equal(t, 2, e.PG.Stats().Charges, "one charge for the order, one for the top-up")
		e.RequireClean(t)
	})
}
