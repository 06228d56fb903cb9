package commerce_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
)

// fillPoints charges the user's points up to total (available and held together).
func fillPoints(t *testing.T, e *commercetest.Env, user string, total int64) {
	t.Helper()
	for have := balance(t, e, user).Total; have < total; {
		n := min(int64(ledger.MaxAmount), total-have)
		e.GivePoints(t, user, n)
		have += n
	}
}

// TestCheckoutAtTheBalanceLimit: no flow that moved money stops for ever because the
// ledger refuses to credit a user at ledger.MaxBalance. A paid order completes without its
// reward, which its payment-completed event reports withheld; a cancelled one gives its points back past the limit; a top-up that the ledger
// could not credit is refused before the card is charged.
// eventPayload returns the payload of the outbox event id.
func eventPayload(t *testing.T, e *commercetest.Env, id string) []byte {
	t.Helper()
	var payload []byte
	require.NoError(t, e.DB.NewSelect().Table("outbox_events").Column("payload").Where("id = ?", id).Scan(ctx, &payload))
	return payload
}

func TestCheckoutAtTheBalanceLimit(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 100_000, 10)

		full := newBuyer(t, e, 0, 0)
		fillPoints(t, e, full.user, ledger.MaxBalance)
		o := pay(t, e, place(t, e, full, sku, 1, 0), "tok_ok")
		require.Equal(t, commerce.StatusPaid, o.Status)
		require.Zero(t, o.Reward, "paid without a reward")
		require.Equal(t, int64(ledger.MaxBalance), balance(t, e, full.user).Total)
		var paid commerce.OrderEvent
		require.NoError(t, json.Unmarshal(eventPayload(t, e, o.ID+"-"+commerce.EventPaymentCompleted), &paid))
		require.Equal(t, [2]int64{0, 1_000}, [2]int64{paid.Reward, paid.RewardWithheld},
			"the event says which reward (1%% of 100,000) the ledger refused")
		require.Equal(t, payment.StateApproved, paymentOf(t, e, o.PaymentID).State)

		spender := newBuyer(t, e, 50_000, 0)
		o = pay(t, e, place(t, e, spender, sku, 1, 50_000), "tok_ok")
		require.Equal(t, commerce.StatusPaid, o.Status)
		require.Positive(t, o.Reward)
		fillPoints(t, e, spender.user, ledger.MaxBalance)
		o, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: spender.user})
		require.NoError(t, err)
		require.Equal(t, commerce.StatusCancelled, o.Status)
		require.Equal(t, ledger.MaxBalance-o.Reward+50_000, balance(t, e, spender.user).Total,
			"the reward clawed back, the 50,000 points spent given back past the limit")

		topper := newBuyer(t, e, 0, 0)
		fillPoints(t, e, topper.user, ledger.MaxBalance-5_000)
		req := commerce.TopUpRequest{UserID: topper.user, Amount: 5_001, Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: "k1"}
		_, err = e.Service.TopUp(ctx, req)
		var limit *ledger.BalanceLimitError
		require.ErrorAs(t, err, &limit)
		require.ErrorIs(t, err, ledger.ErrBalanceLimit)
		n, err := e.DB.NewSelect().Table("commerce_topups").Where("user_id = ?", topper.user).Count(ctx)
		require.NoError(t, err)
		require.Zero(t, n, "nothing recorded, nothing charged")
		req.Amount, req.IdempotencyKey = 5_000, "k2"
		tu, err := e.Service.TopUp(ctx, req)
		require.NoError(t, err)
		require.Equal(t, commerce.TopUpCompleted, tu.Status)
		require.Equal(t, int64(ledger.MaxBalance), balance(t, e, topper.user).Total)
		tu, err = e.Service.TopUp(ctx, req)
		require.NoError(t, err, "a replay at the limit is answered as it was")
		require.Equal(t, commerce.TopUpCompleted, tu.Status)
	})
}

// TestRewardOfTheLargestOrder: the largest order at a 100% reward rate earns
// ledger.MaxAmount, the most one Earn credits, instead of staying PAYING for ever.
func TestRewardOfTheLargestOrder(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		lines := make([]commerce.Line, commerce.MaxLines)
		for i := range lines {
			lines[i] = commerce.Line{ProductID: e.Product(t, commerce.MaxPrice, commerce.MaxQty), Qty: commerce.MaxQty}
		}
		o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: e.ID("user"), Lines: lines, IdempotencyKey: "k"})
		require.NoError(t, err)
		o = pay(t, e, o, "tok_ok")
		require.Equal(t, commerce.StatusPaid, o.Status)
		require.Equal(t, int64(ledger.MaxAmount), o.Reward)
		require.Equal(t, int64(ledger.MaxAmount), balance(t, e, o.UserID).Total)
	}, commerce.WithRewardRate(10_000), commerce.WithUnpaidLimits(0, 0))
}

// TestTopUpInFlightCompletesPastTheBalanceLimit: a top-up recorded before another took the
// room left under ledger.MaxBalance (its process died before the PG was called) is not
// refused once charged: its points settle a payment and may pass MaxBalance.
func TestTopUpInFlightCompletesPastTheBalanceLimit(t *testing.T) {
	hook := &commercetest.Hook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		u := newBuyer(t, e, 0, 0)
		fillPoints(t, e, u.user, ledger.MaxBalance-5_000)
		first := commerce.TopUpRequest{UserID: u.user, Amount: 5_000, Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: "first"}
		hook.FailAt(commerce.StepTopUpRecorded)
		_, err := e.Service.TopUp(ctx, first)
		require.ErrorIs(t, err, commerce.ErrInjected)

		second := first
		second.IdempotencyKey = "second"
		tu, err := e.Service.TopUp(ctx, second)
		require.NoError(t, err)
		require.Equal(t, commerce.TopUpCompleted, tu.Status)

		tu, err = e.Service.TopUp(ctx, first) // the client's retry
		require.NoError(t, err)
		require.Equal(t, commerce.TopUpCompleted, tu.Status)
		require.Equal(t, 1, e.PG.Charges(tu.PaymentID))
		require.Equal(t, int64(ledger.MaxBalance+5_000), balance(t, e, u.user).Total)
	}, commerce.WithFaultHook(hook.Func))
}
