package commerce_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// TestCancelAfterAPartRefundedByOtherMeans: part of a paid order's payment was refunded
// by other means (an operator's goodwill refund through the payment service), then the
// buyer cancels within the window. The cancellation refunds what is left of the payment
// and completes: the order CANCELLED, the payment REFUNDED in full (the operator's part
// and the rest), the units, points and coupon back. It must not stay CANCELLING for ever,
// its refund refused on every pass of Recover for exceeding what is left.
func TestCancelAfterAPartRefundedByOtherMeans(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 5_000, 3_000)
		o := pay(t, e, place(t, e, b, sku, 2, 2_000), "tok_ok")
		require.Equal(t, commerce.StatusPaid, o.Status)
		_, err := e.Payments.Refund(ctx, payment.RefundRequest{RefundID: "goodwill-" + o.ID, PaymentID: o.PaymentID,
			Amount: 5_000, Reason: "goodwill"})
		require.NoError(t, err)

		_, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		assert.NoError(t, err)
		e.Settle(t)

		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusCancelled, got.Status)
		assert.Empty(t, got.Step)
		requireStock(t, e, sku, 10, 0, 0)
		assert.Equal(t, ledger.Balance{Available: 5_000, Total: 5_000}, balance(t, e, b.user))
		assert.Equal(t, coupon.StateAvailable, couponState(t, e, b.coupon))
		p := paymentOf(t, e, o.PaymentID)
		assert.Equal(t, payment.StateRefunded, p.State)
		assert.Equal(t, int64(15_000), p.Refunded)
		assert.Equal(t, int64(15_000), e.PG.Stats().CanceledAmount)
		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}

// TestCancelAfterAPartRefundedByOtherMeansReplayed: the same, the cancellation killed
// right after its refund of the rest, then replayed by its client: the replay finds that
// refund and sends it again as it was, refunding nothing twice.
func TestCancelAfterAPartRefundedByOtherMeansReplayed(t *testing.T) {
	hook := &commercetest.Hook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 5_000, 3_000)
		o := pay(t, e, place(t, e, b, sku, 2, 2_000), "tok_ok")
		_, err := e.Payments.Refund(ctx, payment.RefundRequest{RefundID: "goodwill-" + o.ID, PaymentID: o.PaymentID,
			Amount: 5_000, Reason: "goodwill"})
		require.NoError(t, err)

		hook.FailAt(commerce.StepCancelRefunded)
		_, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.ErrorIs(t, err, commerce.ErrInjected)
		got, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusCancelled, got.Status)
		e.Settle(t)

		requireStock(t, e, sku, 10, 0, 0)
		assert.Equal(t, ledger.Balance{Available: 5_000, Total: 5_000}, balance(t, e, b.user))
		assert.Equal(t, coupon.StateAvailable, couponState(t, e, b.coupon))
		refunds, err := e.Payments.Refunds(ctx, o.PaymentID)
		require.NoError(t, err)
		require.Len(t, refunds, 2)
		assert.Equal(t, int64(10_000), refunds[1].Amount)
		assert.Equal(t, int64(15_000), paymentOf(t, e, o.PaymentID).Refunded)
		assert.Equal(t, int64(15_000), e.PG.Stats().CanceledAmount)
		e.RequireClean(t)
	}, commerce.WithFaultHook(hook.Func))
}

// TestLateApprovalPartRefundedByOtherMeans: an order left PAYING by a PG that did not
// answer is approved, and part of its payment refunded by other means before Recover
// takes it up: it is refunded behind the order's back, which cannot be fulfilled any more.
// Recover refunds the rest and fails the order, giving back what it held, instead of
// failing on every pass for a refund of more than is left.
func TestLateApprovalPartRefundedByOtherMeans(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		f := placed(t, e)
		e.PG.InjectFault("pay-"+f.order.ID, pgsim.FaultLostResponse, 1) // processed, answer lost
		o := pay(t, e, f.order, "tok_ok")
		require.Equal(t, commerce.StatusPaying, o.Status)
		_, err := e.Reconciler.Reconcile(ctx)
		require.NoError(t, err)
		require.Equal(t, payment.StateApproved, paymentOf(t, e, o.PaymentID).State)
		_, err = e.Payments.Refund(ctx, payment.RefundRequest{RefundID: "goodwill-" + o.ID, PaymentID: o.PaymentID,
			Amount: 5_000, Reason: "goodwill"})
		require.NoError(t, err)

		_, err = e.Service.Recover(ctx)
		assert.NoError(t, err)
		e.Settle(t)

		requireGivenBack(t, e, f, commerce.StatusPaymentFailed)
		assert.Equal(t, commerce.FailureUnfulfillable, order(t, e, o.ID).FailureCode)
		p := paymentOf(t, e, o.PaymentID)
		assert.Equal(t, payment.StateRefunded, p.State)
		assert.Equal(t, int64(15_000), p.Refunded)
		assert.Equal(t, 1, e.PG.Charges(o.PaymentID))
		e.RequireClean(t)
	})
}
