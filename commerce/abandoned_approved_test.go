package commerce_test

import (
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

// approveAbandoned has the PG approve the abandoned payment id all the same and say so in
// a webhook; the payment package records the approval with the refund of all of it (its
// void), sent at once unless voidFails, in which case it stays pending for the reconciler.
func approveAbandoned(t *testing.T, e *commercetest.Env, id, order string, amount int64, voidFails bool) {
	t.Helper()
	require.Equal(t, payment.StateAbandoned, paymentOf(t, e, id).State)
	_, err := e.PG.Approve(ctx, payment.ApproveRequest{PaymentID: id, OrderID: order, Amount: amount,
		Currency: "KRW", Method: payment.MethodCard, Token: "tok_ok"})
	require.NoError(t, err)
	if voidFails { // the PG unreachable for the void (sent, then tried again at once)
		e.PG.InjectFault("void-"+id, pgsim.FaultUnavailable, 2)
	}
	body, sig, err := e.PG.Webhook(id)
	require.NoError(t, err)
	if err := e.Service.HandlePaymentWebhook(ctx, body, sig); voidFails {
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable, "the delivery is refused, to come again")
	} else {
		require.NoError(t, err)
	}
	p := paymentOf(t, e, id)
	if voidFails {
		require.Equal(t, []any{payment.StateApproved, amount}, []any{p.State, p.RefundPending}, "the void pending")
	} else {
		require.Equal(t, []any{payment.StateRefunded, amount}, []any{p.State, p.Refunded}, "voided")
	}
}

// TestTopUpAbandonedPaymentApprovedAnyway: should the PG, against its word, approve the
// payment of a top-up that was abandoned (the PG not reached), the payment package gives
// that charge back (its void): the top-up is never completed on it. The client's retry
// with the key makes a new attempt, as after any abandoned payment, whether the void is
// still pending or done, and is charged once and credited once; a top-up whose client
// never comes back is failed by recovery after the order expiry, as any abandoned one.
func TestTopUpAbandonedPaymentApprovedAnyway(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		user := e.ID("user")
		abandon := func(key string, voidFails bool) (commerce.TopUpRequest, string) {
			req := commerce.TopUpRequest{UserID: user, Amount: 5_000, Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: key}
			e.PG.SetFault(pgsim.FaultUnavailable)
			_, err := e.Service.TopUp(ctx, req)
			requireUnreached(t, err)
			e.PG.SetFault(pgsim.FaultNone)
			var id string
			require.NoError(t, e.DB.NewSelect().Table("commerce_topups").Column("id").
				Where("user_id = ?", user).Where("idem_key = ?", key).Scan(ctx, &id))
			approveAbandoned(t, e, "pay-"+id, id, req.Amount, voidFails)
			return req, id
		}
		pending, pendingID := abandon("pending", true)
		voided, voidedID := abandon("voided", false)
		_, goneID := abandon("gone", false)

		for _, c := range []struct {
			req commerce.TopUpRequest
			id  string
		}{{pending, pendingID}, {voided, voidedID}} {
			tu, err := e.Service.TopUp(ctx, c.req) // its client comes back
			require.NoError(t, err)
			assert.Equal(t, []any{commerce.TopUpCompleted, "pay-" + c.id + "-2"}, []any{tu.Status, tu.PaymentID}, c.req.IdempotencyKey)
			assert.Equal(t, 1, e.PG.Charges("pay-"+c.id+"-2"))
		}

		e.Clock.Advance(commerce.DefaultOrderExpiry)
		e.Settle(t) // the pending void is sent; the top-up whose client is gone fails
		got, err := e.Service.GetTopUp(ctx, goneID, commerce.Actor{UserID: user})
		require.NoError(t, err)
		assert.Equal(t, []any{commerce.TopUpFailed, commerce.FailurePGUnreached}, []any{got.Status, got.FailureCode})
		for _, id := range []string{pendingID, voidedID, goneID} {
			p := paymentOf(t, e, "pay-"+id)
			assert.Equal(t, []any{payment.StateRefunded, int64(5_000)}, []any{p.State, p.Refunded}, "the abandoned payment of %s given back", id)
		}
		assert.Equal(t, ledger.Balance{Available: 10_000, Total: 10_000}, balance(t, e, user), "two top-ups credited, once each")
		e.RequireClean(t)
	})
}

// TestPayAbandonedCrashThenApprovedAnyway: a crash between abandoning an order's payment
// and reopening the order leaves it PAYING on the ABANDONED payment; should the PG approve
// that payment all the same before Recover, the payment package gives the charge back (its
// void, here still pending): the order must not be paid by it — it would be paid by money
// being returned — but reopened, and paid by its next attempt.
func TestPayAbandonedCrashThenApprovedAnyway(t *testing.T) {
	hook := &commercetest.Hook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		o := place(t, e, newBuyer(t, e, 0, 0), sku, 1, 0)
		e.PG.SetFault(pgsim.FaultUnavailable)
		hook.FailAt(commerce.StepPayAbandoned)
		_, err := e.Service.Pay(ctx, cardPayment(o, "tok_ok"))
		require.ErrorIs(t, err, commerce.ErrInjected)
		e.PG.SetFault(pgsim.FaultNone)
		first := "pay-" + o.ID
		require.Equal(t, commerce.StatusPaying, order(t, e, o.ID).Status)
		approveAbandoned(t, e, first, o.ID, o.AmountDue, true)

		_, err = e.Service.Recover(ctx)
		require.NoError(t, err)
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPendingPayment, got.Status, "reopened, not paid by a voided payment")

		e.Clock.Advance(time.Second)
		e.Settle(t) // the void is sent
		got = order(t, e, o.ID)
		if got.Status == commerce.StatusPendingPayment {
			got = pay(t, e, o, "tok_ok")
		}
		assert.Equal(t, []any{commerce.StatusPaid, first + "-2"}, []any{got.Status, got.PaymentID})
		p := paymentOf(t, e, first)
		assert.Equal(t, []any{payment.StateRefunded, o.AmountDue}, []any{p.State, p.Refunded})
		requireStock(t, e, sku, 4, 0, 1)
		e.RequireClean(t)
	}, commerce.WithFaultHook(hook.Func))
}
