package commerce_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
)

// TestLateApprovalRefundRejectedIsRetried: an approval that came too late to be fulfilled
// is refunded; when the PG rejects that refund, the buyer's money is still charged for an
// order that will never be fulfilled, so the refund is not given up: the next try (the
// client's Pay replay, Recover's next pass) makes a new refund, and once the PG accepts
// one the order fails, everything given back, the payment refunded once in full.
func TestLateApprovalRefundRejectedIsRetried(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 1)
		b := newBuyer(t, e, 1_000, 2_000)
		o := place(t, e, b, sku, 1, 1_000)
		o = payPastDeadline(t, e, o)

		e.Gateway.RejectRefunds.Store(true)
		_, err := e.Service.Pay(ctx, cardPayment(o, "tok_ok")) // the approval comes, too late
		require.ErrorIs(t, err, payment.ErrRefundRejected)
		_, err = e.Service.Recover(ctx)
		require.ErrorIs(t, err, payment.ErrRefundRejected)
		got := order(t, e, o.ID)
		require.Equal(t, []any{commerce.StatusPaying, commerce.FailureUnfulfillable}, []any{got.Status, got.FailureCode})

		e.Gateway.RejectRefunds.Store(false)
		rep, err := e.Service.Recover(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, rep.Advanced)
		got = order(t, e, o.ID)
		assert.Equal(t, []any{commerce.StatusPaymentFailed, commerce.FailureUnfulfillable, ""},
			[]any{got.Status, got.FailureCode, got.Step})
		p := paymentOf(t, e, o.PaymentID)
		assert.Equal(t, []any{payment.StateRefunded, o.AmountDue}, []any{p.State, p.Refunded})
		assert.Equal(t, 1, e.PG.Charges(o.PaymentID))
		assert.Equal(t, o.AmountDue, e.PG.Stats().CanceledAmount, "refunded once, in full")
		_, err = e.Ledger.Sweep(ctx)
		require.NoError(t, err)
		assert.Equal(t, ledger.Balance{Available: 1_000, Total: 1_000}, balance(t, e, b.user))
		assert.Equal(t, coupon.StateAvailable, couponState(t, e, b.coupon))
		requireStock(t, e, sku, 1, 0, 0)
		e.RequireClean(t)
	})
}

// TestLateApprovalRefundRejectedAnswersRetryLater: when the PG rejects the refund of an
// approval that came too late, Pay's answer is a dependency failure to retry later (an HTTP
// 503 with Retry-After, which frees the idempotency key), since the client's retry is what
// makes the next refund: not an error of no kind, which the server answers 500 internal.
// The client's retry with its key then makes the refund, and the order fails.
func TestLateApprovalRefundRejectedAnswersRetryLater(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 1)
		b := newBuyer(t, e, 1_000, 2_000)
		o := place(t, e, b, sku, 1, 1_000)
		o = payPastDeadline(t, e, o)

		e.Gateway.RejectRefunds.Store(true)
		_, err := e.Service.Pay(ctx, cardPayment(o, "tok_ok")) // the approval comes, too late
		require.ErrorIs(t, err, payment.ErrRefundRejected)
		assert.ErrorIs(t, err, errcode.ErrUnavailable)
		assert.Equal(t, commerce.DefaultPGRetryAfter, errcode.RetryAfter(err, 0))

		e.Gateway.RejectRefunds.Store(false)
		got, err := e.Service.Pay(ctx, cardPayment(o, "tok_ok"))
		require.NoError(t, err)
		assert.Equal(t, []any{commerce.StatusPaymentFailed, commerce.FailureUnfulfillable},
			[]any{got.Status, got.FailureCode})
		assert.Equal(t, o.AmountDue, e.PG.Stats().CanceledAmount, "refunded once, in full")
		e.RequireClean(t)
	})
}
