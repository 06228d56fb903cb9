package collector_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/payment"
)

// TestPartialRefundCountsWhatWasRefunded: the buyer spends part of the reward of a paid
// order, then cancels it; commerce keeps the reward's shortfall and refunds the rest
// (refundPoints + refundAmount, which its order-cancelled event says). The collector must
// count as refunded what was refunded, not everything paid: the shop kept the shortfall,
// which stays in the products' net revenue, shared among the lines as the sale was.
func TestPartialRefundCountsWhatWasRefunded(t *testing.T) {
	e := commercetest.SQLite(t)
	col := newEnv(t, e.DB, collector.WithClock(e.Clock.Now))
	a, b := e.Product(t, 10_000, 5), e.Product(t, 5_000, 5)
	user := e.ID("buyer")
	e.GivePoints(t, user, 1_000)
	o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: user, Points: 1_000,
		Lines: []commerce.Line{{ProductID: a, Qty: 1}, {ProductID: b, Qty: 1}}, IdempotencyKey: "k"})
	require.NoError(t, err)
	o, err = e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: user, Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: "k"})
	require.NoError(t, err)
	require.Equal(t, commerce.StatusPaid, o.Status)
	require.Greater(t, o.Reward, int64(10))
	_, err = e.Ledger.Spend(ctx, ledger.SpendRequest{ID: e.ID("spend"), User: user, Amount: o.Reward - 10})
	require.NoError(t, err)
	got, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: user})
	require.NoError(t, err)
	require.Equal(t, commerce.StatusCancelled, got.Status)
	require.Equal(t, o.Reward-10, got.RewardShortfall, "the buyer keeps the part of the reward spent")
	refunded := got.RefundPoints + got.RefundAmount
	require.Equal(t, o.Points+o.AmountDue-got.RewardShortfall, refunded)
	e.Drain(t)
	deliverOutbox(t, col)
	col.rollup(t)

	day := e.Clock.Now().In(collector.Seoul()).Format(time.DateOnly)
	ma, mb := col.metricsOf(t, collector.Daily, a, day), col.metricsOf(t, collector.Daily, b, day)
	assert.Equal(t, o.Points+o.AmountDue, ma.Revenue+mb.Revenue, "revenue = what was paid")
	assert.Equal(t, refunded, ma.RevenueRefunded+mb.RevenueRefunded, "revenue refunded = what the cancellation refunded")
	assert.Equal(t, got.RewardShortfall, ma.NetRevenue+mb.NetRevenue, "the shop kept the shortfall")
	// Shared in proportion to the lines' amounts (2:1), the rounding left to the last line.
	wantA := refunded * 10_000 / 15_000
	assert.Equal(t, collector.Metrics{Orders: 1, Units: 1, Revenue: 10_000, Cancellations: 1, UnitsRefunded: 1,
		RevenueRefunded: wantA, NetUnits: 0, NetRevenue: 10_000 - wantA}, ma)
	assert.Equal(t, collector.Metrics{Orders: 1, Units: 1, Revenue: 5_000, Cancellations: 1, UnitsRefunded: 1,
		RevenueRefunded: refunded - wantA, NetUnits: 0, NetRevenue: 5_000 - (refunded - wantA)}, mb)
	assert.Equal(t, ma, col.metricsOf(t, collector.Weekly, a, day))
	assert.Equal(t, mb, col.metricsOf(t, collector.Monthly, b, day))
}

// TestRefundAmountsThatDoNotAddUpAreDeadLettered: a refund event whose refundPoints,
// refundAmount and rewardShortfall do not add up to what was paid is dead-lettered, and
// counts nothing; one that adds up counts what it refunded.
func TestRefundAmountsThatDoNotAddUpAreDeadLettered(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		refund := func(order string, points, refundPoints, refundAmount, shortfall int64, only ...string) outbox.Event {
			s := sale{order: order, at: kst("2026-03-04", 10), lines: map[string]int64{"x": 1, "y": 1}, refund: true}
			return edited(t, s, func(oe *commerce.OrderEvent) {
				oe.Points, oe.AmountDue = points, oe.Subtotal-points
				oe.RefundPoints, oe.RefundAmount, oe.RewardShortfall = &refundPoints, &refundAmount, shortfall
				if len(only) > 0 {
					oe.RefundAmount = nil
				}
			})
		}
		poison := []outbox.Event{
			refund("more-than-paid", 500, 500, 1_600, 0),
			refund("shortfall-missing", 500, 400, 1_500, 0),
			refund("negative", 500, 600, -100, 1_500),
			refund("points-over-points", 500, 1_000, 900, 100),
			refund("amount-due-wrong", 2_500, 500, 1_400, 100),
			refund("half", 500, 500, 1_500, 0, "no refundAmount"),
		}
		good := refund("ok", 500, 400, 1_500, 100) // paid 2,000; 1,900 refunded, 100 kept
		require.NoError(t, e.consumer.Deliver(ctx, append(poison, good)))
		dead, err := outbox.NewDeadLetterTable(e.db).List(ctx, collector.ConsumerName, 0)
		require.NoError(t, err)
		var ids, want []string
		for _, d := range dead {
			ids = append(ids, d.ID)
		}
		for _, p := range poison {
			want = append(want, p.ID)
		}
		assert.ElementsMatch(t, want, ids)
		assert.Equal(t, collector.Metrics{Cancellations: 1, UnitsRefunded: 1, RevenueRefunded: 950, NetUnits: -1, NetRevenue: -950},
			e.metricsOf(t, collector.Daily, "x", "2026-03-04"))
		assert.Equal(t, collector.Metrics{Cancellations: 1, UnitsRefunded: 1, RevenueRefunded: 950, NetUnits: -1, NetRevenue: -950},
			e.metricsOf(t, collector.Daily, "y", "2026-03-04"))
	})
}
