package commerce_test

import (
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/payment"
)

// rewardCase is a paid order whose buyer spends some points before cancelling it.
type rewardCase struct {
	name                   string
	points, coupon         int64 // the buyer's points and coupon (0: none)
	use                    int64 // points the order pays with (2 units at 10,000)
	spend                  int64 // points the buyer spends once the order is paid
	shortfall              int64 // the part of the reward that cannot be clawed back
	refundPoints, refundPG int64 // what the cancellation gives back
	balance                int64 // the buyer's points at the end
}

// Rate 1%. Card only: due 20,000, reward 200. Coupon 3,000 and 2,000 points: due 15,000,
// reward 150. Coupon 3,000 and 100 points: due 16,900, reward 169.
var rewardCases = []rewardCase{
	{name: "unspent", refundPG: 20_000},
	{name: "partly spent", spend: 150, shortfall: 150, refundPG: 19_850},
	{name: "fully spent", spend: 200, shortfall: 200, refundPG: 19_800},
	{name: "composite, shortfall within the points", points: 5_000, coupon: 3_000, use: 2_000, spend: 3_100,
		shortfall: 100, refundPoints: 1_900, refundPG: 15_000, balance: 1_900},
	{name: "composite, shortfall beyond the points", points: 1_000, coupon: 3_000, use: 100, spend: 1_069,
		shortfall: 169, refundPoints: 0, refundPG: 16_831},
	{name: "points only (no reward)", points: 25_000, use: 20_000, spend: 5_000, refundPoints: 20_000, balance: 20_000},
}

// TestCancelRewardSpent: a paid order is cancelled within the window whatever the buyer did
// with its reward. What is left of the reward is clawed back; the rest (the shortfall) is
// deducted from the points given back first, then from the payment refunded. Points and
// money are conserved: what the buyer keeps of the payment is exactly the shortfall.
func TestCancelRewardSpent(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		for _, c := range rewardCases {
			t.Run(c.name, func(t *testing.T) {
				sku := e.Product(t, 10_000, 10)
				b := newBuyer(t, e, c.points, c.coupon)
				o := pay(t, e, place(t, e, b, sku, 2, c.use), "tok_ok")
				require.Equal(t, commerce.StatusPaid, o.Status)
				if c.spend > 0 {
					_, err := e.Ledger.Spend(ctx, ledger.SpendRequest{ID: e.ID("spend"), User: b.user, Amount: c.spend})
					require.NoError(t, err)
				}
				e.Clock.Advance(commerce.DefaultCancelWindow - time.Second)

				got, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
				require.NoError(t, err)
				requireRewardCancel(t, e, c, b, sku, got)

				again, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
				require.NoError(t, err, "a repeated Cancel answers the same")
				assert.Equal(t, got, again)
				requireRewardCancel(t, e, c, b, sku, again)
				e.RequireClean(t)
			})
		}
		e.RequireDelivered(t)
	})
}

// requireRewardCancel checks the exact end state of a rewardCase's cancellation.
func requireRewardCancel(t *testing.T, e *commercetest.Env, c rewardCase, b buyer, sku string, got commerce.Order) {
	t.Helper()
	assert.Equal(t, commerce.StatusCancelled, got.Status)
	assert.Empty(t, got.Step)
	requireStock(t, e, sku, 10, 0, 0)
	assert.Equal(t, ledger.Balance{Available: c.balance, Total: c.balance}, balance(t, e, b.user))
	if b.coupon != "" {
		assert.Equal(t, coupon.StateAvailable, couponState(t, e, b.coupon))
	}
	kept := got.Points - c.refundPoints + got.AmountDue - c.refundPG
	assert.Equal(t, c.shortfall, kept, "the buyer keeps exactly the shortfall of what they paid")
	assert.Equal(t, [3]int64{c.shortfall, c.refundPoints, c.refundPG}, [3]int64{got.RewardShortfall, got.RefundPoints, got.RefundAmount},
		"shortfall, points and amount refunded")
	ev := cancelledEvent(t, e, got.ID)
	assert.Equal(t, float64(c.refundPoints), ev["refundPoints"], "the event says what was refunded")
	assert.Equal(t, float64(c.refundPG), ev["refundAmount"])
	if c.shortfall > 0 {
		assert.Equal(t, float64(c.shortfall), ev["rewardShortfall"])
	} else {
		assert.NotContains(t, ev, "rewardShortfall")
	}
	if got.AmountDue == 0 {
		assert.Empty(t, got.PaymentID)
		return
	}
	refunds, err := e.Payments.Refunds(ctx, got.PaymentID)
	require.NoError(t, err)
	require.Len(t, refunds, 1, "one refund")
	assert.Equal(t, c.refundPG, refunds[0].Amount)
	assert.Equal(t, payment.RefundSucceeded, refunds[0].State)
	wantState := payment.StateRefunded
	if c.refundPG < got.AmountDue {
		wantState = payment.StatePartiallyRefunded
	}
	p := paymentOf(t, e, got.PaymentID)
	assert.Equal(t, wantState, p.State)
	assert.Equal(t, c.refundPG, p.Refunded)
	atPG, err := e.PG.Status(ctx, got.PaymentID)
	require.NoError(t, err)
	assert.Equal(t, c.refundPG, atPG.Canceled, "refunded at the PG")
}

// cancelledEvent reads the order-cancelled event of an order from the outbox.
func cancelledEvent(t *testing.T, e *commercetest.Env, orderID string) map[string]any {
	t.Helper()
	var payload []byte
	require.NoError(t, e.DB.NewSelect().Table(outbox.TableEvents).Column("payload").
		Where("id = ?", orderID+"-"+commerce.EventOrderCancelled).Scan(ctx, &payload))
	var ev map[string]any
	require.NoError(t, json.Unmarshal(payload, &ev))
	return ev
}

// TestCancelRewardSpentRefundRejected: the PG rejects the partial refund; the order goes
// back to PAID with the clawback (what was left of the reward) given back. A later
// cancellation, with another part of the reward still there, refunds according to it.
func TestCancelRewardSpentRefundRejected(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 0, 0)
		o := pay(t, e, place(t, e, b, sku, 2, 0), "tok_ok") // reward 200
		_, err := e.Ledger.Spend(ctx, ledger.SpendRequest{ID: e.ID("spend"), User: b.user, Amount: 150})
		require.NoError(t, err)

		e.Gateway.RejectRefunds.Store(true)
		_, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.ErrorIs(t, err, commerce.ErrRefundRejected)
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPaid, got.Status)
		assert.Equal(t, ledger.Balance{Available: 50, Total: 50}, balance(t, e, b.user), "the clawback given back")
		requireStock(t, e, sku, 8, 0, 2)
		e.RequireClean(t)

		e.Gateway.RejectRefunds.Store(false)
		e.GivePoints(t, b.user, 30) // 80 of the reward's 200 are there now
		got, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusCancelled, got.Status)
		assert.Equal(t, ledger.Balance{}, balance(t, e, b.user))
		refunds, err := e.Payments.Refunds(ctx, o.PaymentID)
		require.NoError(t, err)
		require.Len(t, refunds, 2)
		assert.Equal(t, payment.RefundFailed, refunds[0].State)
		assert.Equal(t, payment.RefundSucceeded, refunds[1].State)
		assert.Equal(t, int64(20_000-120), refunds[1].Amount)
		requireStock(t, e, sku, 10, 0, 0)
		e.RequireClean(t)
	})
}

// TestCancelRewardTakesThePayment: at a reward rate of 100% the reward is the whole
// payment; spent entirely, it leaves nothing to refund: the order is cancelled (the units
// back on sale) without a refund, and the payment stays APPROVED.
func TestCancelRewardTakesThePayment(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 0, 0)
		o := pay(t, e, place(t, e, b, sku, 1, 0), "tok_ok")
		require.Equal(t, int64(10_000), o.Reward)
		_, err := e.Ledger.Spend(ctx, ledger.SpendRequest{ID: e.ID("spend"), User: b.user, Amount: 10_000})
		require.NoError(t, err)

		got, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusCancelled, got.Status)
		assert.Equal(t, [3]int64{10_000, 0, 0}, [3]int64{got.RewardShortfall, got.RefundPoints, got.RefundAmount})
		requireStock(t, e, sku, 10, 0, 0)
		assert.Equal(t, ledger.Balance{}, balance(t, e, b.user))
		assert.Equal(t, payment.StateApproved, paymentOf(t, e, o.PaymentID).State)
		assert.Zero(t, e.PG.Stats().CancelCalls, "nothing to refund")
		e.RequireClean(t)
	}, commerce.WithRewardRate(10_000))
}

// TestCancelRewardBeyondTheRefund: an order whose reward is more than it paid (a row
// written by something else: the rate is at most 100%) and spent beyond what the
// cancellation would refund cannot be cancelled: ErrRewardSpent, and nothing changes.
func TestCancelRewardBeyondTheRefund(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 0, 0)
		o := pay(t, e, place(t, e, b, sku, 1, 0), "tok_ok") // reward 100
		_, err := e.Ledger.Spend(ctx, ledger.SpendRequest{ID: e.ID("spend"), User: b.user, Amount: 50})
		require.NoError(t, err)
		setReward := func(reward int64) {
			_, err := e.DB.NewUpdate().Table("commerce_orders").Set("reward = ?", reward).Where("id = ?", o.ID).Exec(ctx)
			require.NoError(t, err)
		}
		setReward(10_051) // 10,001 of it spent: more than the 10,000 paid

		_, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.ErrorIs(t, err, commerce.ErrRewardSpent)
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPaid, got.Status)
		assert.Empty(t, got.Step)
		assert.Zero(t, got.RewardShortfall)
		assert.Equal(t, ledger.Balance{Available: 50, Total: 50}, balance(t, e, b.user), "no clawback")
		requireStock(t, e, sku, 9, 0, 1)
		assert.Zero(t, e.PG.Stats().CancelCalls)

		setReward(100)
		e.RequireClean(t)
		got, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.NoError(t, err)
		assert.Equal(t, [3]int64{50, 0, 9_950}, [3]int64{got.RewardShortfall, got.RefundPoints, got.RefundAmount})
		e.RequireClean(t)
	})
}

// TestCancelRewardSpentConcurrently: the buyer spends points while several requests cancel
// the order at once. Whatever interleaving happens, the clawback takes what is left, every
// spend that succeeded is the shortfall, deducted from the one refund, and nothing is left
// over or refunded twice.
func TestCancelRewardSpentConcurrently(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 0, 0)
		o := pay(t, e, place(t, e, b, sku, 2, 0), "tok_ok") // reward 200
		const workers = 8
		var (
			wg    sync.WaitGroup
			spent atomic.Int64
		)
		for i := range workers {
			wg.Go(func() {
				_, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
				assert.True(t, err == nil || errors.Is(err, ledger.ErrInsufficientPoints), "cancel: %v", err)
			})
			id := e.ID("spend")
			wg.Go(func() {
				_, err := e.Ledger.Spend(ctx, ledger.SpendRequest{ID: id, User: b.user, Amount: 25 + int64(i)})
				if err == nil {
					spent.Add(25 + int64(i))
				} else {
					assert.ErrorIs(t, err, ledger.ErrInsufficientPoints)
				}
			})
		}
		wg.Wait()
		t.Logf("the buyer spent %d of the reward's 200 points", spent.Load())
		got, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusCancelled, got.Status)
		assert.Equal(t, spent.Load(), got.RewardShortfall, "the shortfall is what the buyer spent")
		assert.Equal(t, 20_000-spent.Load(), got.RefundAmount)
		assert.Equal(t, ledger.Balance{}, balance(t, e, b.user))
		refunds, err := e.Payments.Refunds(ctx, o.PaymentID)
		require.NoError(t, err)
		require.Len(t, refunds, 1)
		assert.Equal(t, got.RefundAmount, refunds[0].Amount)
		atPG, err := e.PG.Status(ctx, o.PaymentID)
		require.NoError(t, err)
		assert.Equal(t, got.RefundAmount, atPG.Canceled)
		requireStock(t, e, sku, 10, 0, 0)
		e.RequireClean(t)
	})
}
