package commerce_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
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
		require.NoError(t, e.PG.Overturn(pid))
		body, sig, err := e.PG.Webhook(pid)
		require.NoError(t, err)
		require.NoError(t, e.Service.HandlePaymentWebhook(ctx, body, sig))
		p, err := e.Payments.Get(ctx, pid)
		require.NoError(t, err)
		require.Equal(t, payment.StateReview, p.State)

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
	}, commerce.WithFaultHook(hook.Func))
}
