package commerce_test

import (
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// interleave is a fault hook that, the first time a flow passes step once armed, runs fn
// there (the flow paused with the order as it last read it) and lets the flow go on.
type interleave struct {
	step string
	fn   atomic.Pointer[func()]
}

func (h *interleave) arm(step string, fn func()) {
	h.step = step
	h.fn.Store(&fn)
}

func (h *interleave) hook(step string) error {
	if step != h.step {
		return nil
	}
	if fn := h.fn.Swap(nil); fn != nil {
		(*fn)()
	}
	return nil
}

// TestStaleReopenLosesToANewAttempt: a Pay whose PG call was refused pauses between
// learning that its payment was abandoned and reopening the order; meanwhile Recover
// reopens the order and the buyer pays again, a second attempt whose answer is lost (the
// order PAYING on "pay-<order>-2", which the PG charged). The paused Pay's reopening is
// about the first attempt: it must not reopen the order paying by the second, which would
// leave that charge fulfilling nothing and let the buyer be charged a third time.
func TestStaleReopenLosesToANewAttempt(t *testing.T) {
	h := &interleave{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		o := place(t, e, newBuyer(t, e, 0, 0), sku, 1, 0)
		first, second := "pay-"+o.ID, "pay-"+o.ID+"-2"
		e.PG.InjectFault(first, pgsim.FaultUnavailable, 1)
		h.arm(commerce.StepPayAbandoned, func() {
			_, err := e.Service.Recover(ctx) // reopens the order on the abandoned payment
			require.NoError(t, err)
			require.Equal(t, commerce.StatusPendingPayment, order(t, e, o.ID).Status)
			e.PG.InjectFault(second, pgsim.FaultLostResponse, 1) // charged, the answers lost
			req := cardPayment(o, "tok_ok")
			req.IdempotencyKey = "second-" + o.ID
			got, err := e.Service.Pay(ctx, req)
			require.NoError(t, err)
			require.Equal(t, commerce.StatusPaying, got.Status)
			require.Equal(t, second, got.PaymentID)
		})
		_, err := e.Service.Pay(ctx, cardPayment(o, "tok_ok"))
		require.ErrorIs(t, err, errcode.ErrUnavailable, "the first attempt's answer: the PG was not reached")

		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPaying, got.Status, "still paying by the second attempt")
		assert.Equal(t, second, got.PaymentID)

		e.Clock.Advance(time.Second)
		e.Settle(t)
		got = order(t, e, o.ID)
		if got.Status == commerce.StatusPendingPayment { // the buyer pays what looks unpaid
			got = pay(t, e, o, "tok_ok")
		}
		assert.Equal(t, commerce.StatusPaid, got.Status)
		assert.Equal(t, second, got.PaymentID)
		charges := 0
		for _, p := range testkit.Must(e.Payments.ByOrder(ctx, o.ID))(t) {
			charges += e.PG.Charges(p.ID)
		}
		assert.Equal(t, 1, charges, "the buyer is charged once in all")
		requireStock(t, e, sku, 4, 0, 1)
		e.RequireClean(t)
	}, commerce.WithFaultHook(h.hook))
}

// TestStaleRevertLosesToANewCancellation: a Cancel of a paid order pauses once the order
// is CANCELLING; meanwhile another Cancel finds the refund rejected and puts the order back
// to PAID, and a third cancels it again, a second attempt whose refund the PG made but whose
// answer is lost. The paused Cancel then learns that its attempt's refund was rejected: its
// revert is about the first attempt and must not put the order being refunded by the
// second back to PAID (the buyer refunded and keeping the order, the reward clawed back
// and not given back).
func TestStaleRevertLosesToANewCancellation(t *testing.T) {
	h := &interleave{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		b := newBuyer(t, e, 0, 0)
		o := pay(t, e, place(t, e, b, sku, 1, 0), "tok_ok")
		require.Equal(t, commerce.StatusPaid, o.Status)
		require.Equal(t, int64(100), o.Reward)
		second := "refund-" + o.ID + "-2"
		h.arm(commerce.StepCancelCancelling, func() {
			_, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
			require.ErrorIs(t, err, commerce.ErrRefundRejected)
			require.Equal(t, commerce.StatusPaid, order(t, e, o.ID).Status)
			e.Gateway.RejectRefunds.Store(false)
			e.PG.InjectFault(second, pgsim.FaultLostResponse, 1) // refunded, the answers lost
			got, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
			require.NoError(t, err)
			require.Equal(t, commerce.StatusCancelling, got.Status)
		})
		e.Gateway.RejectRefunds.Store(true)
		_, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		if err != nil {
			require.ErrorIs(t, err, commerce.ErrRefundRejected)
		}
		assert.Equal(t, commerce.StatusCancelling, order(t, e, o.ID).Status, "still cancelling by the second attempt")

		e.Clock.Advance(time.Second)
		e.Settle(t)
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusCancelled, got.Status)
		assert.Equal(t, int64(10_000), got.RefundAmount)
		p := paymentOf(t, e, o.PaymentID)
		assert.Equal(t, []any{payment.StateRefunded, int64(10_000)}, []any{p.State, p.Refunded})
		assert.Equal(t, ledger.Balance{}, balance(t, e, b.user), "the reward clawed back once")
		requireStock(t, e, sku, 5, 0, 0)
		e.RequireClean(t)
	}, commerce.WithFaultHook(h.hook))
}

// TestStaleTopUpFailureLosesToARetry: Recover lists the top-ups PAYING, then takes them one
// by one. Two were abandoned (the PG not reached) longer than the order expiry ago, which
// is when recovery fails a top-up whose client did not come back; the client of the first
// came back and its new attempt was approved. While Recover completes that one, the client
// of the second comes back too: its retry makes a new attempt, which the PG charges (the
// answer lost). Recover then takes the second up from the row it listed, on the abandoned
// payment: failing it for its client's absence would leave the new attempt's charge buying
// nothing.
func TestStaleTopUpFailureLosesToARetry(t *testing.T) {
	h := &interleave{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		user := e.ID("user")
		reqs := map[string]commerce.TopUpRequest{}
		e.PG.SetFault(pgsim.FaultUnavailable)
		for _, key := range []string{"a", "b"} {
			req := commerce.TopUpRequest{UserID: user, Amount: 5_000, Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: key}
			_, err := e.Service.TopUp(ctx, req)
			requireUnreached(t, err)
			var id string
			require.NoError(t, e.DB.NewSelect().Table("commerce_topups").Column("id").
				Where("user_id = ?", user).Where("idem_key = ?", key).Scan(ctx, &id))
			reqs[id] = req
		}
		e.PG.SetFault(pgsim.FaultNone)
		ids := slices.Sorted(maps.Keys(reqs)) // the order Recover takes them in
		first, second := ids[0], ids[1]

		e.PG.InjectFault("pay-"+first+"-2", pgsim.FaultLostResponse, 1) // charged, the answer lost
		tu, err := e.Service.TopUp(ctx, reqs[first])                    // its client comes back
		require.NoError(t, err)
		require.Equal(t, commerce.TopUpPaying, tu.Status)
		e.Clock.Advance(commerce.DefaultOrderExpiry)
		_, err = e.Reconciler.Reconcile(ctx)
		require.NoError(t, err)
		require.Equal(t, payment.StateApproved, paymentOf(t, e, "pay-"+first+"-2").State)

		h.arm(commerce.StepTopUpApproved, func() { // Recover completing the first
			e.PG.InjectFault("pay-"+second+"-2", pgsim.FaultLostResponse, 1)
			tu, err := e.Service.TopUp(ctx, reqs[second]) // its client comes back
			require.NoError(t, err)
			require.Equal(t, commerce.TopUpPaying, tu.Status)
			require.Equal(t, "pay-"+second+"-2", tu.PaymentID)
		})
		_, err = e.Service.Recover(ctx)
		require.NoError(t, err)
		got, err := e.Service.GetTopUp(ctx, second, commerce.Actor{UserID: user})
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpPaying, got.Status, "paying by the new attempt")

		e.Clock.Advance(time.Second)
		e.Settle(t)
		for _, id := range ids {
			got, err := e.Service.GetTopUp(ctx, id, commerce.Actor{UserID: user})
			require.NoError(t, err)
			assert.Equal(t, []any{commerce.TopUpCompleted, "pay-" + id + "-2"}, []any{got.Status, got.PaymentID}, id)
			assert.Equal(t, 1, e.PG.Charges("pay-"+id+"-2"))
		}
		assert.Equal(t, 2, e.PG.Stats().Charges)
		assert.Equal(t, ledger.Balance{Available: 10_000, Total: 10_000}, balance(t, e, user), "both charges bought points")
		e.RequireClean(t)
	}, commerce.WithFaultHook(h.hook))
}
