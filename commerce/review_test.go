package commerce_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// TestForgedApprovalNeverPays: a declined card is being charged (the PG is slow) when a
// correctly signed, forged "approved" webhook arrives. The PG, asked, does not confirm it:
// the order fails on the PG's own answer, its stock, points and coupon come back, no reward
// is earned, and the audit is clean.
func TestForgedApprovalNeverPays(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		b := newBuyer(t, e, 3_000, 1_000)
		o := place(t, e, b, sku, 2, 3_000)
		gate := make(chan struct{})
		e.Gateway.BeforeApprove = func() { <-gate } // the PG is slow to answer
		type result struct {
			o   commerce.Order
			err error
		}
		paid := make(chan result, 1)
		go func() {
			got, err := e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: b.user, Method: payment.MethodCard,
				Token: pgsim.TokenDecline, IdempotencyKey: "pay-" + o.ID})
			paid <- result{got, err}
		}()
		pid := "pay-" + o.ID
		require.Eventually(t, func() bool { // the payment is recorded; the PG has not answered
			_, err := e.Payments.Get(ctx, pid)
			return err == nil
		}, 10*time.Second, 5*time.Millisecond)
		forged := fmt.Appendf(nil, `{"type":"payment.approved","payment_id":%q,"amount":%d,"currency":"KRW","created_at":"2026-03-01T12:00:00Z"}`,
			pid, o.AmountDue)
		err := e.Service.HandlePaymentWebhook(ctx, forged, pgsim.Sign([]byte(pgsim.DefaultWebhookSecret), forged))
		assert.ErrorIs(t, err, payment.ErrWebhookUnconfirmed)
		close(gate)
		r := <-paid
		require.NoError(t, r.err)
		assert.Equal(t, commerce.StatusPaymentFailed, r.o.Status)
		assert.Equal(t, pgsim.CodeCardDeclined, r.o.FailureCode)
		requireStock(t, e, sku, 5, 0, 0)
		assert.Equal(t, int64(3_000), balance(t, e, b.user).Available, "points back, no reward")
		e.RequireClean(t)
	})
}

// TestPaymentUnderReviewFailsTheOrder: the payment was approved and the process died before
// completing the order; then the PG reverses the approval and says so in a webhook. The
// payment moves to REVIEW, recovery fails the order instead of paying it (everything it held
// comes back, no reward), and the audit reports the payment until a person decides.
func TestPaymentUnderReviewFailsTheOrder(t *testing.T) {
	hook := &commercetest.Hook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		b := newBuyer(t, e, 3_000, 1_000)
		o := place(t, e, b, sku, 2, 3_000)
		hook.FailAt(commerce.StepPayApproved)
		_, err := e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: b.user, Method: payment.MethodCard,
			Token: "tok_visa", IdempotencyKey: "pay-" + o.ID})
		require.ErrorIs(t, err, commerce.ErrInjected)
		require.Equal(t, commerce.StatusPaying, order(t, e, o.ID).Status)

		pid := order(t, e, o.ID).PaymentID
		overturn(t, e, pid)

		e.Settle(t)
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPaymentFailed, got.Status)
		assert.Equal(t, commerce.FailurePaymentReview, got.FailureCode)
		requireStock(t, e, sku, 5, 0, 0)
		assert.Equal(t, int64(3_000), balance(t, e, b.user).Available, "points back, no reward")

		rep, err := e.Service.Audit(ctx)
		require.NoError(t, err)
		require.Len(t, rep.Discrepancies, 1, "%v", rep.Discrepancies)
		assert.Equal(t, "payment.gateway", rep.Discrepancies[0].Kind)
		assert.Equal(t, o.ID, rep.Discrepancies[0].Subject)

		// The person resolves it: the PG holds nothing of it, so nothing is refunded.
		rec, err := e.Service.ResolvePaymentReview(ctx, pid)
		require.NoError(t, err)
		assert.Equal(t, payment.StateDeclined, rec.Payment.State)
		assert.Empty(t, rec.Refunds)
		e.RequireClean(t)
	}, commerce.WithFaultHook(hook.Func))
}

// TestResolvePaymentReviewGivesBackACharge: the PG declined a card, the order failed, and
// then the PG overturned its decline and took the money. The payment is in REVIEW (the
// audit reports it); ResolvePaymentReview refunds the charge through the PG, once however
// often it is called, and the audit is clean. A top-up the same.
func TestResolvePaymentReviewGivesBackACharge(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		b := newBuyer(t, e, 0, 0)
		o := pay(t, e, place(t, e, b, sku, 1, 0), pgsim.TokenDecline)
		require.Equal(t, commerce.StatusPaymentFailed, o.Status)
		overturnDecline(t, e, o.PaymentID)
		require.Equal(t, 1, e.PG.Charges(o.PaymentID), "the PG holds the money of a failed order")
		rep, err := e.Service.Audit(ctx)
		require.NoError(t, err)
		require.NotEmpty(t, rep.Discrepancies)

		for range 2 {
			rec, err := e.Service.ResolvePaymentReview(ctx, o.PaymentID)
			require.NoError(t, err)
			assert.Equal(t, payment.StateRefunded, rec.Payment.State)
			require.Len(t, rec.Refunds, 1)
			assert.Equal(t, payment.RefundSucceeded, rec.Refunds[0].State)
			assert.Equal(t, o.AmountDue, rec.Refunds[0].Amount)
		}
		st, err := e.PG.Status(ctx, o.PaymentID)
		require.NoError(t, err)
		assert.Equal(t, o.AmountDue, st.Canceled, "refunded once at the PG")
		assert.Equal(t, commerce.StatusPaymentFailed, order(t, e, o.ID).Status)
		requireStock(t, e, sku, 5, 0, 0)

		top, err := e.Service.TopUp(ctx, commerce.TopUpRequest{UserID: b.user, Amount: 7_000, Method: payment.MethodCard,
			Token: pgsim.TokenDecline, IdempotencyKey: "top-review"})
		require.NoError(t, err)
		require.Equal(t, commerce.TopUpFailed, top.Status)
		overturnDecline(t, e, top.PaymentID)
		rec, err := e.Service.ResolvePaymentReview(ctx, top.PaymentID)
		require.NoError(t, err)
		assert.Equal(t, payment.StateRefunded, rec.Payment.State)
		assert.Zero(t, balance(t, e, b.user).Available, "the top-up credits nothing")
		e.RequireClean(t)
	})
}

// overturnDecline has the PG approve a payment it had declined (and take the money) and say
// so in a webhook: the payment, DECLINED here, moves to REVIEW.
func overturnDecline(t *testing.T, e *commercetest.Env, paymentID string) {
	t.Helper()
	require.Equal(t, payment.StateDeclined, paymentOf(t, e, paymentID).State)
	overturn(t, e, paymentID)
}

// TestCancelOfPaymentUnderReview: a PAID order whose payment the PG later reversed (the
// payment is in REVIEW) cannot be refunded by a cancellation: Cancel fails with a clear
// error (the refund is refused while a person decides), the order goes back to PAID with its
// reward, instead of hanging in CANCELLING with its reward clawed back and recovery failing
// on it forever.
func TestCancelOfPaymentUnderReview(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		b := newBuyer(t, e, 0, 0)
		o := pay(t, e, place(t, e, b, sku, 1, 0), "tok_visa")
		require.Equal(t, commerce.StatusPaid, o.Status)
		reward := balance(t, e, b.user).Available
		require.Positive(t, reward)

		overturn(t, e, o.PaymentID)

		_, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.ErrorIs(t, err, commerce.ErrRefundRejected)
		require.ErrorIs(t, err, payment.ErrUnderReview)
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPaid, got.Status)
		assert.Equal(t, reward, balance(t, e, b.user).Available, "the reward clawback is refunded")
		e.Settle(t) // recovery has nothing left to fail on
		assert.Equal(t, commerce.StatusPaid, order(t, e, o.ID).Status)
		p := paymentOf(t, e, o.PaymentID)
		assert.Equal(t, payment.StateReview, p.State)
		assert.Zero(t, p.Refunded)

		// The order was paid by it: no software gives that money back.
		_, err = e.Service.ResolvePaymentReview(ctx, o.PaymentID)
		require.ErrorIs(t, err, commerce.ErrPaymentInUse)
		assert.Equal(t, payment.StateReview, paymentOf(t, e, o.PaymentID).State)
	})
}

// TestLateApprovalUnderReviewFailsTheOrder: an approval came too late (the reservation had
// expired), the refund was decided, and then the PG reversed the approval: the payment is
// in REVIEW and cannot be refunded. The order fails as any order on a payment under review
// (everything it held comes back) instead of staying PAYING with recovery failing on it.
func TestLateApprovalUnderReviewFailsTheOrder(t *testing.T) {
	hook := &commercetest.Hook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 1)
		b := newBuyer(t, e, 1_000, 0)
		o := place(t, e, b, sku, 1, 1_000)
		o = payPastDeadline(t, e, o)
		hook.FailAt(commerce.StepPayRefundDecided)
		_, err := e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: b.user, Method: payment.MethodCard,
			Token: "tok_ok", IdempotencyKey: "pay-" + o.ID})
		require.ErrorIs(t, err, commerce.ErrInjected)
		overturn(t, e, o.PaymentID)

		e.Settle(t)
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPaymentFailed, got.Status)
		assert.Equal(t, commerce.FailurePaymentReview, got.FailureCode)
		requireStock(t, e, sku, 1, 0, 0)
		assert.Equal(t, int64(1_000), balance(t, e, b.user).Available, "points back")
		p := paymentOf(t, e, o.PaymentID)
		assert.Equal(t, payment.StateReview, p.State)
		assert.Zero(t, p.Refunded)

		rep, err := e.Service.Audit(ctx)
		require.NoError(t, err)
		require.Len(t, rep.Discrepancies, 1, "%v", rep.Discrepancies)
		assert.Equal(t, "payment.gateway", rep.Discrepancies[0].Kind, "only the payment awaiting a person")
		_, err = e.Service.ResolvePaymentReview(ctx, o.PaymentID)
		require.NoError(t, err)
		e.RequireClean(t)
	}, commerce.WithFaultHook(hook.Func))
}

// The approval arrives but the points hold is gone (here: voided behind the order's back):
// the order cannot be completed, so the payment is refunded and the order failed. With the
// inventory outside SQL the units were already sold when that was found out: they are
// returned (inventory.Return), so in both the units end up available and not sold.
func TestApprovedButHoldGone(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		b := newBuyer(t, e, 1_000, 0)
		o := place(t, e, b, sku, 2, 1_000)
		_, err := e.Ledger.Void(ctx, "hold-"+o.ID)
		require.NoError(t, err)

		got := pay(t, e, o, "tok_ok")
		assert.Equal(t, commerce.StatusPaymentFailed, got.Status)
		assert.Equal(t, commerce.FailureUnfulfillable, got.FailureCode)
		assert.Equal(t, ledger.Balance{Available: 1_000, Total: 1_000}, balance(t, e, b.user))
		requireStock(t, e, sku, 5, 0, 0)
		assert.Equal(t, int64(19_000), e.PG.Stats().CanceledAmount)
		e.RequireClean(t)
	})
}
