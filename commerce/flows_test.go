package commerce_test

import (
	"context"
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
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/observe"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/payment/resilient"
)

// A card order with a coupon and points: placed, paid, and everything it touched moved.
func TestPlaceAndPay(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 5_000, 3_000)

		o := place(t, e, b, sku, 2, 2_000)
		assert.Equal(t, [4]int64{20_000, 3_000, 2_000, 15_000}, [4]int64{o.Subtotal, o.Discount, o.Points, o.AmountDue})
		assert.Equal(t, []commerce.OrderLine{{ProductID: sku, Qty: 2, UnitPrice: 10_000, Amount: 20_000}}, o.Lines)
		assert.Equal(t, commercetest.Start.Add(commerce.DefaultOrderExpiry), o.ExpiresAt)
		requireStock(t, e, sku, 8, 2, 0)
		assert.Equal(t, ledger.Balance{Available: 3_000, Held: 2_000, Total: 5_000}, balance(t, e, b.user))
		assert.Equal(t, coupon.StateReserved, couponState(t, e, b.coupon))
		e.RequireClean(t)

		o = pay(t, e, o, "tok_ok")
		assert.Equal(t, commerce.StatusPaid, o.Status)
		assert.Equal(t, commercetest.Start, o.PaidAt)
		assert.Equal(t, int64(150), o.Reward) // 1% of the 15,000 paid by card
		assert.Equal(t, payment.MethodCard, o.PayMethod)
		assert.Empty(t, o.Step)
		requireStock(t, e, sku, 8, 0, 2)
		assert.Equal(t, ledger.Balance{Available: 3_150, Total: 3_150}, balance(t, e, b.user))
		assert.Equal(t, coupon.StateUsed, couponState(t, e, b.coupon))
		p := paymentOf(t, e, o.PaymentID)
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Equal(t, int64(15_000), p.Amount)
		assert.Equal(t, 1, e.PG.Charges(o.PaymentID))

		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}

// An order of several products reads back, by GetOrder and ListOrders, as PlaceOrder
// returned it: every line, by product.
func TestOrderLinesReadBack(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		skus := []string{e.Product(t, 1_000, 10), e.Product(t, 2_000, 10), e.Product(t, 3_000, 10)}
		user := e.ID("user")
		placed, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: user, IdempotencyKey: "k",
			Lines: []commerce.Line{{ProductID: skus[2], Qty: 1}, {ProductID: skus[0], Qty: 2}, {ProductID: skus[1], Qty: 3}}})
		require.NoError(t, err)
		assert.Equal(t, []commerce.OrderLine{
			{ProductID: skus[0], Qty: 2, UnitPrice: 1_000, Amount: 2_000},
			{ProductID: skus[1], Qty: 3, UnitPrice: 2_000, Amount: 6_000},
			{ProductID: skus[2], Qty: 1, UnitPrice: 3_000, Amount: 3_000},
		}, placed.Lines)
		got, err := e.Service.GetOrder(ctx, placed.ID, commerce.Actor{UserID: user})
		require.NoError(t, err)
		assert.Equal(t, placed, got)
		page, err := e.Service.ListOrders(ctx, user, commerce.OrderQuery{})
		require.NoError(t, err)
		assert.Equal(t, []commerce.Order{placed}, page.Orders)
		_, err = e.Service.GetOrder(ctx, placed.ID+"x", commerce.Actor{UserID: user})
		require.ErrorIs(t, err, commerce.ErrOrderNotFound)
	})
}

// A declined card gives everything back.
func TestPayDeclined(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 5_000, 3_000)
		o := place(t, e, b, sku, 2, 2_000)

		o = pay(t, e, o, pgsim.TokenDecline)
		assert.Equal(t, commerce.StatusPaymentFailed, o.Status)
		assert.Equal(t, pgsim.CodeCardDeclined, o.FailureCode)
		assert.Empty(t, o.Step)
		requireStock(t, e, sku, 10, 0, 0)
		assert.Equal(t, ledger.Balance{Available: 5_000, Total: 5_000}, balance(t, e, b.user))
		assert.Equal(t, coupon.StateAvailable, couponState(t, e, b.coupon))

		// The coupon and the points can be used again.
		again := place(t, e, b, sku, 1, 5_000)
		assert.Equal(t, int64(2_000), again.AmountDue)
		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}

// Points alone are paid synchronously, without the gateway.
func TestPayWithPointsOnly(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 7_000, 5)
		b := newBuyer(t, e, 10_000, 0)
		o := place(t, e, b, sku, 1, 7_000)
		assert.Zero(t, o.AmountDue)

		got, err := e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: b.user, IdempotencyKey: "k"})
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusPaid, got.Status)
		assert.Empty(t, got.PaymentID)
		assert.Zero(t, got.Reward)
		assert.Zero(t, e.PG.Stats().ApproveCalls)
		assert.Equal(t, ledger.Balance{Available: 3_000, Total: 3_000}, balance(t, e, b.user))
		requireStock(t, e, sku, 4, 0, 1)
		e.RequireClean(t)
	})
}

// PayWithPoints places and pays an order of points alone in one call; a request it cannot
// pay so is refused before anything is reserved, and a payment that fails after the
// placement is finished by the retry.
func TestPlaceOrderPayWithPoints(t *testing.T) {
	var failPay atomic.Bool
	hook := func(step string) error {
		if step == commerce.StepPayStart && failPay.Load() {
			return errors.New("injected: the payment fails after the placement")
		}
		return nil
	}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 7_000, 5)
		b := newBuyer(t, e, 20_000, 0)
		req := func(key string, points int64) commerce.PlaceOrderRequest {
			return commerce.PlaceOrderRequest{UserID: b.user, Lines: []commerce.Line{{ProductID: sku, Qty: 1}},
				Points: points, IdempotencyKey: key, PayWithPoints: true}
		}

		o, err := e.Service.PlaceOrder(ctx, req("k1", 7_000))
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusPaid, o.Status)
		replay, err := e.Service.PlaceOrder(ctx, req("k1", 7_000))
		require.NoError(t, err)
		assert.Equal(t, o, replay)

		// Points short of the subtotal, or a coupon beside them: refused, nothing held.
		var verr *commerce.ValidationError
		_, err = e.Service.PlaceOrder(ctx, req("k2", 6_999))
		require.ErrorAs(t, err, &verr)
		withCoupon := req("k3", 7_000)
		withCoupon.CouponID = e.GiveCoupon(t, e.CouponTemplate(t, 1_000), b.user)
		_, err = e.Service.PlaceOrder(ctx, withCoupon)
		require.ErrorAs(t, err, &verr)
		assert.Equal(t, ledger.Balance{Available: 13_000, Total: 13_000}, balance(t, e, b.user))
		requireStock(t, e, sku, 4, 0, 1)

		// The payment fails once the order is placed: the retry pays it, once.
		failPay.Store(true)
		_, err = e.Service.PlaceOrder(ctx, req("k4", 7_000))
		failPay.Store(false)
		require.Error(t, err)
		requireStock(t, e, sku, 3, 1, 1)
		o, err = e.Service.PlaceOrder(ctx, req("k4", 7_000))
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusPaid, o.Status)
		assert.Zero(t, e.PG.Stats().ApproveCalls)
		assert.Equal(t, ledger.Balance{Available: 6_000, Total: 6_000}, balance(t, e, b.user))
		requireStock(t, e, sku, 3, 0, 2)
		e.RequireClean(t)
		e.RequireDelivered(t)
	}, commerce.WithFaultHook(hook))
}

func TestPlaceOrderValidation(t *testing.T) {
	e := commercetest.SQLite(t, commerce.WithUnpaidLimits(0, 0)) // 50 units of one product; the caps: unpaid_test.go
	sku := e.Product(t, 1_000, 100)
	b := newBuyer(t, e, 100, 0)
	lines := func(n int) []commerce.Line {
		out := make([]commerce.Line, n)
		for i := range out {
			out[i] = commerce.Line{ProductID: sku, Qty: 1}
		}
		return out
	}
	for name, tc := range map[string]struct {
		req  commerce.PlaceOrderRequest
		want error
	}{
		"no lines":         {commerce.PlaceOrderRequest{}, commerce.ErrInvalidRequest},
		"51 lines":         {commerce.PlaceOrderRequest{Lines: lines(51)}, commerce.ErrInvalidRequest},
		"zero quantity":    {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku}}}, commerce.ErrInvalidRequest},
		"1000 units":       {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: 1000}}}, commerce.ErrInvalidRequest},
		"summed past 999":  {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: 500}, {ProductID: sku, Qty: 500}}}, commerce.ErrInvalidRequest},
		"bad product ID":   {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: "a,b", Qty: 1}}}, commerce.ErrInvalidRequest},
		"unknown product":  {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: "nope", Qty: 1}}}, commerce.ErrProductNotFound},
		"negative points":  {commerce.PlaceOrderRequest{Lines: lines(1), Points: -1}, commerce.ErrInvalidRequest},
		"points > order":   {commerce.PlaceOrderRequest{Lines: lines(1), Points: 1_001}, commerce.ErrInvalidRequest},
		"too few points":   {commerce.PlaceOrderRequest{Lines: lines(1), Points: 101}, commerce.ErrInsufficientPoints},
		"too much stock":   {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: 101}}}, commerce.ErrOutOfStock},
		"unknown coupon":   {commerce.PlaceOrderRequest{Lines: lines(1), CouponID: "c-0"}, commerce.ErrCouponUnusable},
		"bad user":         {commerce.PlaceOrderRequest{UserID: "a b", Lines: lines(1)}, commerce.ErrInvalidRequest},
		"empty key":        {commerce.PlaceOrderRequest{Lines: lines(1), IdempotencyKey: "-"}, nil},
		"50 summed lines":  {commerce.PlaceOrderRequest{Lines: lines(50), Points: 100}, nil},
		"lines of one sku": {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: 4}, {ProductID: sku, Qty: 6}}}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			req := tc.req
			if req.UserID == "" {
				req.UserID = b.user
			}
			if req.IdempotencyKey == "" && name != "no lines" {
				req.IdempotencyKey = e.ID("key")
			}
			before := stock(t, e, sku)
			o, err := e.Service.PlaceOrder(ctx, req)
			if tc.want == nil {
				require.NoError(t, err)
				_, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
			assert.Equal(t, before, stock(t, e, sku), "a refused order changes no stock")
			assert.Equal(t, ledger.Balance{Available: 100, Total: 100}, balance(t, e, b.user))
		})
	}
	var insufficient *inventory.InsufficientStockError
	_, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: b.user, IdempotencyKey: "x",
		Lines: []commerce.Line{{ProductID: sku, Qty: 101}}})
	require.ErrorAs(t, err, &insufficient)
	assert.Equal(t, int64(100), insufficient.Available)
	page, err := e.Service.ListOrders(ctx, b.user, commerce.OrderQuery{Status: commerce.StatusPendingPayment})
	require.NoError(t, err)
	assert.Empty(t, page.Orders)
	e.RequireClean(t)
}

// Payment method rules: a coupon never pays alone, points and a coupon need a card,
// BNPL pays alone and from 10,000 won.
func TestPaymentRules(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 5_000, 100)
		tpl := e.CouponTemplate(t, 5_000)
		user := e.ID("user")
		e.GivePoints(t, user, 100_000)
		req := func(qty, points int64, coupon bool) commerce.PlaceOrderRequest {
			r := commerce.PlaceOrderRequest{UserID: user, Lines: []commerce.Line{{ProductID: sku, Qty: qty}}, Points: points, IdempotencyKey: e.ID("k")}
			if coupon {
				r.CouponID = e.GiveCoupon(t, tpl, user)
			}
			return r
		}
		_, err := e.Service.PlaceOrder(ctx, req(1, 0, true))
		require.ErrorIs(t, err, payment.ErrCouponAlone)
		require.ErrorIs(t, err, commerce.ErrPaymentRule)
		_, err = e.Service.PlaceOrder(ctx, req(2, 5_000, true))
		require.ErrorIs(t, err, payment.ErrCompositeWithoutCard)

		payWith := func(o commerce.Order, m payment.Method) (commerce.Order, error) {
			return e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: user, Method: m, Token: "tok", IdempotencyKey: e.ID("p")})
		}
		withPoints, err := e.Service.PlaceOrder(ctx, req(3, 1_000, false))
		require.NoError(t, err)
		_, err = payWith(withPoints, payment.MethodBNPL)
		require.ErrorIs(t, err, payment.ErrBNPLCombined)
		small, err := e.Service.PlaceOrder(ctx, req(1, 0, false))
		require.NoError(t, err)
		_, err = payWith(small, payment.MethodBNPL)
		require.ErrorIs(t, err, payment.ErrBNPLMinimum)
		_, err = payWith(small, payment.MethodPoint)
		require.ErrorIs(t, err, commerce.ErrInvalidRequest)
		assert.Equal(t, commerce.StatusPendingPayment, order(t, e, small.ID).Status, "a refused payment changes nothing")

		big, err := e.Service.PlaceOrder(ctx, req(2, 0, false))
		require.NoError(t, err)
		got, err := payWith(big, payment.MethodBNPL)
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusPaid, got.Status)
		assert.Equal(t, payment.MethodBNPL, got.PayMethod)
		got, err = payWith(withPoints, payment.MethodCard)
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusPaid, got.Status)
		e.RequireClean(t)
	})
}

// PlaceOrder, Pay and Cancel repeated with the same key return the same result and apply
// nothing twice; the same key with another request is a conflict.
func TestIdempotentReplays(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 1_000, 2_000)
		req := commerce.PlaceOrderRequest{UserID: b.user, Lines: []commerce.Line{{ProductID: sku, Qty: 1}, {ProductID: sku, Qty: 1}},
			CouponID: b.coupon, Points: 1_000, IdempotencyKey: "place-1"}
		first, err := e.Service.PlaceOrder(ctx, req)
		require.NoError(t, err)
		req.Lines = []commerce.Line{{ProductID: sku, Qty: 2}} // the same order, written differently
		again, err := e.Service.PlaceOrder(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, first, again)
		requireStock(t, e, sku, 8, 2, 0)
		req.Lines[0].Qty = 3
		_, err = e.Service.PlaceOrder(ctx, req)
		var conflict *commerce.ConflictError
		require.ErrorAs(t, err, &conflict)                       // one type for every package's reused key:
		require.ErrorIs(t, err, commerce.ErrIdempotencyConflict) // commerce's own
		assert.Equal(t, commerce.ConflictError{Kind: "order", Key: req.IdempotencyKey, Err: commerce.ErrIdempotencyConflict}, *conflict)
		_, err = e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: b.user, IdempotencyKey: req.IdempotencyKey,
			Lines: []commerce.Line{{ProductID: "nope", Qty: 1}}})
		require.ErrorIs(t, err, commerce.ErrIdempotencyConflict, "the key's order answers before the catalog")
		other := newBuyer(t, e, 0, 0)
		req.UserID = other.user // the same key of another user is another order
		req.CouponID, req.Points = "", 0
		o2, err := e.Service.PlaceOrder(ctx, req)
		require.NoError(t, err)
		assert.NotEqual(t, first.ID, o2.ID)

		preq := commerce.PayRequest{OrderID: first.ID, UserID: b.user, Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: "pay-1"}
		paid, err := e.Service.Pay(ctx, preq)
		require.NoError(t, err)
		paid2, err := e.Service.Pay(ctx, preq)
		require.NoError(t, err)
		assert.Equal(t, paid, paid2)
		assert.Equal(t, 1, e.PG.ApproveCalls(paid.PaymentID))
		preq.Token = "tok_other"
		_, err = e.Service.Pay(ctx, preq)
		require.ErrorIs(t, err, commerce.ErrIdempotencyConflict)
		preq.IdempotencyKey = "pay-2"
		_, err = e.Service.Pay(ctx, preq)
		var state *commerce.StateError
		require.ErrorAs(t, err, &state)
		assert.Equal(t, commerce.StatusPaid, state.Status)

		cancelled, err := e.Service.Cancel(ctx, first.ID, commerce.Actor{UserID: b.user})
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusCancelled, cancelled.Status)
		again2, err := e.Service.Cancel(ctx, first.ID, commerce.Actor{UserID: b.user})
		require.NoError(t, err)
		assert.Equal(t, cancelled, again2)
		assert.Equal(t, 1, e.PG.Stats().Cancels)
		assert.Equal(t, ledger.Balance{Available: 1_000, Total: 1_000}, balance(t, e, b.user))
		e.RequireClean(t)
	})
}

func TestCancelUnpaid(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 5_000, 3_000)
		o := place(t, e, b, sku, 3, 2_000)

		_, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: "someone-else"})
		require.ErrorIs(t, err, commerce.ErrOrderNotFound, "another user's order does not exist for them")
		_, err = e.Service.GetOrder(ctx, o.ID, commerce.Actor{UserID: "someone-else"})
		require.ErrorIs(t, err, commerce.ErrOrderNotFound)

		got, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusCancelled, got.Status)
		assert.Equal(t, commercetest.Start, got.ClosedAt)
		requireStock(t, e, sku, 10, 0, 0)
		assert.Equal(t, ledger.Balance{Available: 5_000, Total: 5_000}, balance(t, e, b.user))
		assert.Equal(t, coupon.StateAvailable, couponState(t, e, b.coupon))

		// Paying a cancelled order is refused; an admin may cancel anyone's order.
		_, err = e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: b.user, Method: payment.MethodCard, IdempotencyKey: "p"})
		require.ErrorIs(t, err, commerce.ErrInvalidState)
		o2 := place(t, e, b, sku, 1, 0)
		got, err = e.Service.Cancel(ctx, o2.ID, commerce.Actor{UserID: "admin", Admin: true})
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusCancelled, got.Status)
		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}

// A paid order cancelled within the window: refund, points back, reward clawed back,
// coupon restored, units back on sale.
func TestCancelPaid(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 5_000, 3_000)
		o := pay(t, e, place(t, e, b, sku, 2, 2_000), "tok_ok")
		require.Equal(t, commerce.StatusPaid, o.Status)
		e.Clock.Advance(commerce.DefaultCancelWindow - time.Second)

		got, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusCancelled, got.Status)
		assert.Empty(t, got.Step)
		requireStock(t, e, sku, 10, 0, 0) // returned: available again, no longer sold
		assert.Equal(t, ledger.Balance{Available: 5_000, Total: 5_000}, balance(t, e, b.user))
		assert.Equal(t, coupon.StateAvailable, couponState(t, e, b.coupon))
		assert.Equal(t, payment.StateRefunded, paymentOf(t, e, o.PaymentID).State)
		assert.Equal(t, int64(15_000), e.PG.Stats().CanceledAmount)
		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}

func TestCancelPaidRefusals(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 0, 0)
		late := pay(t, e, place(t, e, b, sku, 1, 0), "tok_ok")
		e.Clock.Advance(commerce.DefaultCancelWindow)
		_, err := e.Service.Cancel(ctx, late.ID, commerce.Actor{UserID: b.user})
		var window *commerce.CancelWindowError
		require.ErrorAs(t, err, &window)
		assert.Equal(t, late.PaidAt.Add(commerce.DefaultCancelWindow), window.Deadline)

		// A payment in flight cannot be cancelled.
		inflight := place(t, e, b, sku, 1, 0)
		e.PG.InjectFault("pay-"+inflight.ID, pgsim.FaultLostResponse, 1)
		inflight = pay(t, e, inflight, "tok_ok")
		require.Equal(t, commerce.StatusPaying, inflight.Status)
		_, err = e.Service.Cancel(ctx, inflight.ID, commerce.Actor{UserID: b.user})
		require.ErrorIs(t, err, commerce.ErrInvalidState)
		e.Settle(t)
		e.RequireClean(t)
	})
}

// The PG rejects the refund: the cancellation is undone and the clawback (what was left of
// the reward) refunded; the next cancellation claws back what the user has then.
func TestCancelRefundRejected(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 1_000, 0)
		o := pay(t, e, place(t, e, b, sku, 1, 1_000), "tok_ok")
		require.Equal(t, int64(90), o.Reward)
		_, err := e.Ledger.Spend(ctx, ledger.SpendRequest{ID: e.ID("spend"), User: b.user, Amount: 60})
		require.NoError(t, err) // 30 of the reward left: the shortfall is 60

		e.Gateway.RejectRefunds.Store(true)
		_, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.ErrorIs(t, err, commerce.ErrRefundRejected)
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPaid, got.Status)
		assert.Equal(t, commerce.FailureRefundRejected, got.FailureCode)
		assert.Zero(t, got.RewardShortfall)
		assert.Equal(t, ledger.Balance{Available: 30, Total: 30}, balance(t, e, b.user), "the clawback given back")
		requireStock(t, e, sku, 9, 0, 1)
		e.RequireClean(t)

		// 50 of the reward there now: another clawback, another shortfall (40).
		e.GivePoints(t, b.user, 20)
		e.Gateway.RejectRefunds.Store(false)
		got, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusCancelled, got.Status)
		assert.Equal(t, [3]int64{40, 960, 9_000}, [3]int64{got.RewardShortfall, got.RefundPoints, got.RefundAmount})
		assert.Equal(t, ledger.Balance{Available: 960, Total: 960}, balance(t, e, b.user))
		requireStock(t, e, sku, 10, 0, 0)
		e.RequireClean(t)
	})
}

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

// spentOrder pays qty units of a new product (10 at 10,000) with use of the buyer's points
// and the rest by card, then has the buyer spend spend points.
func spentOrder(t *testing.T, e *commercetest.Env, b buyer, qty, use, spend int64) (sku string, o commerce.Order) {
	t.Helper()
	sku = e.Product(t, 10_000, 10)
	o = pay(t, e, place(t, e, b, sku, qty, use), "tok_ok")
	require.Equal(t, commerce.StatusPaid, o.Status)
	if spend > 0 {
		_, err := e.Ledger.Spend(ctx, ledger.SpendRequest{ID: e.ID("spend"), User: b.user, Amount: spend})
		require.NoError(t, err)
	}
	return sku, o
}

// TestCancelRewardSpent: a paid order is cancelled within the window whatever the buyer did
// with its reward. What is left of the reward is clawed back; the rest (the shortfall) is
// deducted from the points given back first, then from the payment refunded. Points and
// money are conserved: what the buyer keeps of the payment is exactly the shortfall.
func TestCancelRewardSpent(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		for _, c := range rewardCases {
			t.Run(c.name, func(t *testing.T) {
				b := newBuyer(t, e, c.points, c.coupon)
				sku, o := spentOrder(t, e, b, 2, c.use, c.spend)
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

// TestCancelRewardSpentHasAStepOfItsOwn: a cancellation with a reward shortfall waits in
// CANCELLING under a step of its own ("cancel_short"), which a process of an earlier version
// (that would refund in full) does not resume during a rolling deploy; one without keeps
// "cancel". Recovery completes both as Cancel would have.
func TestCancelRewardSpentHasAStepOfItsOwn(t *testing.T) {
	hook := &commercetest.Hook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		for _, c := range []struct {
			rewardCase
			step string
		}{{rewardCases[0], "cancel"}, {rewardCases[2], "cancel_short"}} {
			t.Run(c.name, func(t *testing.T) {
				b := newBuyer(t, e, c.points, c.coupon)
				sku, o := spentOrder(t, e, b, 2, c.use, c.spend)
				hook.FailAt(commerce.StepCancelCancelling)
				_, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
				require.ErrorIs(t, err, commerce.ErrInjected)
				left := order(t, e, o.ID)
				assert.Equal(t, commerce.StatusCancelling, left.Status)
				assert.Equal(t, c.step, left.Step)

				e.Settle(t)
				requireRewardCancel(t, e, c.rewardCase, b, sku, order(t, e, o.ID))
				e.RequireClean(t)
			})
		}
	}, commerce.WithFaultHook(hook.Func))
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
	var payload []byte
	require.NoError(t, e.DB.NewSelect().Table(outbox.TableEvents).Column("payload").
		Where("id = ?", got.ID+"-"+commerce.EventOrderCancelled).Scan(ctx, &payload))
	var ev commerce.OrderEvent
	require.NoError(t, json.Unmarshal(payload, &ev))
	require.NotNil(t, ev.RefundPoints, "the order-cancelled event says what was refunded")
	require.NotNil(t, ev.RefundAmount)
	assert.Equal(t, [3]int64{c.shortfall, c.refundPoints, c.refundPG}, [3]int64{ev.RewardShortfall, *ev.RefundPoints, *ev.RefundAmount})
	if got.AmountDue == 0 {
		assert.Empty(t, got.PaymentID)
		return
	}
	requireRefunded(t, e, got, c.refundPG)
}

// requireRefunded checks that o's payment was refunded once, of amount, at the PG too.
func requireRefunded(t *testing.T, e *commercetest.Env, o commerce.Order, amount int64) {
	t.Helper()
	refunds, err := e.Payments.Refunds(ctx, o.PaymentID)
	require.NoError(t, err)
	require.Len(t, refunds, 1, "one refund")
	assert.Equal(t, amount, refunds[0].Amount)
	assert.Equal(t, payment.RefundSucceeded, refunds[0].State)
	want := payment.StateRefunded
	if amount < o.AmountDue {
		want = payment.StatePartiallyRefunded
	}
	p := paymentOf(t, e, o.PaymentID)
	assert.Equal(t, want, p.State)
	assert.Equal(t, amount, p.Refunded)
	atPG, err := e.PG.Status(ctx, o.PaymentID)
	require.NoError(t, err)
	assert.Equal(t, amount, atPG.Canceled, "refunded at the PG")
}

// TestCancelRewardTakesThePayment: at a reward rate of 100% the reward is the whole
// payment; spent entirely, it leaves nothing to refund: the order is cancelled (the units
// back on sale) without a refund, and the payment stays APPROVED.
func TestCancelRewardTakesThePayment(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		b := newBuyer(t, e, 0, 0)
		sku, o := spentOrder(t, e, b, 1, 0, 10_000)
		require.Equal(t, int64(10_000), o.Reward)

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
		b := newBuyer(t, e, 0, 0)
		sku, o := spentOrder(t, e, b, 1, 0, 50) // reward 100
		setReward := func(reward int64) {
			_, err := e.DB.NewUpdate().Table("commerce_orders").Set("reward = ?", reward).Where("id = ?", o.ID).Exec(ctx)
			require.NoError(t, err)
		}
		setReward(10_051) // 10,001 of it spent: more than the 10,000 paid

		_, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
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
		b := newBuyer(t, e, 0, 0)
		sku, o := spentOrder(t, e, b, 2, 0, 0) // reward 200
		var (
			wg    sync.WaitGroup
			spent atomic.Int64
		)
		for i := range int64(8) {
			wg.Go(func() {
				_, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
				assert.True(t, err == nil || errors.Is(err, ledger.ErrInsufficientPoints), "cancel: %v", err)
			})
			id := e.ID("spend")
			wg.Go(func() {
				_, err := e.Ledger.Spend(ctx, ledger.SpendRequest{ID: id, User: b.user, Amount: 25 + i})
				if err == nil {
					spent.Add(25 + i)
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
		requireRefunded(t, e, got, got.RefundAmount)
		requireStock(t, e, sku, 10, 0, 0)
		e.RequireClean(t)
	})
}

func TestExpire(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 5_000, 3_000)
		o1 := place(t, e, b, sku, 2, 2_000)
		e.Clock.Advance(time.Minute)
		o2 := place(t, e, newBuyer(t, e, 0, 0), sku, 1, 0)
		e.Clock.Advance(commerce.DefaultOrderExpiry - time.Minute)

		n, err := e.Service.Expire(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		got := order(t, e, o1.ID)
		assert.Equal(t, commerce.StatusExpired, got.Status)
		assert.Equal(t, commerce.StatusPendingPayment, order(t, e, o2.ID).Status)
		requireStock(t, e, sku, 9, 1, 0)
		assert.Equal(t, ledger.Balance{Available: 5_000, Total: 5_000}, balance(t, e, b.user))

		// Pay after the deadline expires the order on the spot.
		e.Clock.Advance(time.Minute)
		_, err = e.Service.Pay(ctx, commerce.PayRequest{OrderID: o2.ID, UserID: o2.UserID, Method: payment.MethodCard, IdempotencyKey: "p"})
		require.ErrorIs(t, err, commerce.ErrOrderExpired)
		assert.Equal(t, commerce.StatusExpired, order(t, e, o2.ID).Status)
		n, err = e.Service.Expire(ctx)
		require.NoError(t, err)
		assert.Zero(t, n)
		requireStock(t, e, sku, 10, 0, 0)
		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}

// The gateway's answer is lost: the order waits PAYING, the reconciler learns the answer,
// and recovery completes the order.
func TestPayOutcomeUnknown(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 1_000, 0)
		approved := place(t, e, b, sku, 1, 1_000)
		declined := place(t, e, b, sku, 1, 0)
		e.PG.InjectFault("pay-"+approved.ID, pgsim.FaultLostResponse, 1)
		e.PG.InjectFault("pay-"+declined.ID, pgsim.FaultError, 1)

		assert.Equal(t, commerce.StatusPaying, pay(t, e, approved, "tok_ok").Status)
		assert.Equal(t, commerce.StatusPaying, pay(t, e, declined, pgsim.TokenDecline).Status)
		rep, err := e.Service.Recover(ctx)
		require.NoError(t, err)
		assert.Equal(t, commerce.RecoverReport{Examined: 2, Waiting: 2}, rep, "recovery leaves unsettled payments to the reconciler")

		rep = e.Settle(t)
		assert.Equal(t, commerce.RecoverReport{Examined: 2, Advanced: 2}, rep)
		assert.Equal(t, commerce.StatusPaid, order(t, e, approved.ID).Status)
		assert.Equal(t, commerce.StatusPaymentFailed, order(t, e, declined.ID).Status)
		assert.Equal(t, 1, e.PG.Charges("pay-"+approved.ID))
		requireStock(t, e, sku, 9, 0, 1)
		e.RequireClean(t)
	})
}

// A webhook settles an unknown payment; recovery completes the order.
func TestPayWebhook(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		o := place(t, e, newBuyer(t, e, 0, 0), sku, 1, 0)
		e.PG.InjectFault("pay-"+o.ID, pgsim.FaultSlow, 1)
		// The caller gives up once the PG has charged (FaultSlow then hangs): cancelling on a
		// timer instead could end the call before it reached the PG on a loaded machine.
		short, cancel := context.WithCancel(ctx)
		paid := make(chan error, 1)
		go func() {
			_, err := e.Service.Pay(short, commerce.PayRequest{OrderID: o.ID, UserID: o.UserID, Method: payment.MethodCard, Token: "t", IdempotencyKey: "k"})
			paid <- err
		}()
		require.Eventually(t, func() bool { return e.PG.Charges("pay-"+o.ID) > 0 }, 30*time.Second, time.Millisecond)
		cancel()
		if err := <-paid; err != nil {
			require.ErrorIs(t, err, context.Canceled, "only the context's error may surface")
		}
		require.Equal(t, commerce.StatusPaying, order(t, e, o.ID).Status)

		body, sig, err := e.PG.Webhook("pay-" + o.ID)
		require.NoError(t, err)
		require.ErrorIs(t, e.Service.HandlePaymentWebhook(ctx, body, "v1=00"), payment.ErrInvalidWebhook)
		require.NoError(t, e.Service.HandlePaymentWebhook(ctx, body, sig))
		_, err = e.Service.Recover(ctx)
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusPaid, order(t, e, o.ID).Status)
		e.RequireClean(t)
	})
}

// An approval that arrives after the reservation expired is refunded and the order failed.
func TestLateApprovalRefunded(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 1)
		b := newBuyer(t, e, 1_000, 2_000)
		o := place(t, e, b, sku, 1, 1_000)
		// The PG stays down past the reservation's deadline; the unit goes to someone else.
		o = payPastDeadline(t, e, o)
		other := place(t, e, newBuyer(t, e, 0, 0), sku, 1, 0)

		e.Settle(t)
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPaymentFailed, got.Status)
		assert.Equal(t, commerce.FailureUnfulfillable, got.FailureCode)
		assert.Equal(t, payment.StateRefunded, paymentOf(t, e, o.PaymentID).State)
		assert.Equal(t, ledger.Balance{Available: 1_000, Total: 1_000}, balance(t, e, b.user))
		assert.Equal(t, coupon.StateAvailable, couponState(t, e, b.coupon))
		requireStock(t, e, sku, 0, 1, 0)
		assert.Equal(t, commerce.StatusPaid, pay(t, e, other, "tok_ok").Status)
		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}

// Run's loops finish what requests left: an unknown payment is settled by the reconciler
// and the order completed by recovery, a due order expires, events are relayed; and Run
// stops when its context ends.
func TestRun(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 0, 0)
		unknown := place(t, e, b, sku, 1, 0)
		e.PG.InjectFault("pay-"+unknown.ID, pgsim.FaultLostResponse, 1)
		require.Equal(t, commerce.StatusPaying, pay(t, e, unknown, "tok_ok").Status)
		due := place(t, e, b, sku, 2, 0)
		e.Clock.Advance(commerce.DefaultOrderExpiry)

		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- e.Service.Run(runCtx) }()
		require.Eventually(t, func() bool {
			return order(t, e, unknown.ID).Status == commerce.StatusPaid && order(t, e, due.ID).Status == commerce.StatusExpired
		}, 30*time.Second, 20*time.Millisecond)
		require.Eventually(t, func() bool {
			lag, err := e.Relay.Lag(ctx)
			return err == nil && lag == 0
		}, 30*time.Second, 20*time.Millisecond)
		stop()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not stop")
		}
		requireStock(t, e, sku, 9, 0, 1)
		e.RequireClean(t)
		e.RequireDelivered(t)
	}, commerce.WithRecovery(0, 10*time.Millisecond), commerce.WithSweepInterval(10*time.Millisecond))
}

// A refund the PG has not answered leaves the order CANCELLING until recovery.
func TestCancelRefundPending(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 0, 0)
		o := pay(t, e, place(t, e, b, sku, 1, 0), "tok_ok")
		e.PG.InjectFault("refund-"+o.ID+"-1", pgsim.FaultError, 1)
		got, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusCancelling, got.Status)
		e.Settle(t)
		got = order(t, e, o.ID)
		assert.Equal(t, commerce.StatusCancelled, got.Status)
		assert.Equal(t, 1, e.PG.Stats().Cancels)
		requireStock(t, e, sku, 10, 0, 0)
		e.RequireClean(t)
	})
}

func TestTopUp(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		user := e.ID("user")
		req := commerce.TopUpRequest{UserID: user, Amount: 30_000, Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: "t1"}
		tu, err := e.Service.TopUp(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpCompleted, tu.Status)
		again, err := e.Service.TopUp(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, tu, again)
		assert.Equal(t, ledger.Balance{Available: 30_000, Total: 30_000}, balance(t, e, user))
		req.Amount = 1
		_, err = e.Service.TopUp(ctx, req)
		require.ErrorIs(t, err, commerce.ErrIdempotencyConflict)

		declined, err := e.Service.TopUp(ctx, commerce.TopUpRequest{UserID: user, Amount: 5_000, Method: payment.MethodCard, Token: pgsim.TokenDecline, IdempotencyKey: "t2"})
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpFailed, declined.Status)
		_, err = e.Service.TopUp(ctx, commerce.TopUpRequest{UserID: user, Amount: 5_000, Method: payment.MethodBNPL, IdempotencyKey: "t3"})
		require.ErrorIs(t, err, payment.ErrBNPLMinimum)

		unknown := commerce.TopUpRequest{UserID: user, Amount: 1_000, Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: "t4"}
		e.PG.SetFault(pgsim.FaultLostResponse)
		tu, err = e.Service.TopUp(ctx, unknown)
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpPaying, tu.Status)
		e.PG.SetFault(pgsim.FaultNone)
		e.Settle(t)
		tu, err = e.Service.GetTopUp(ctx, tu.ID, commerce.Actor{UserID: user})
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpCompleted, tu.Status)
		_, err = e.Service.GetTopUp(ctx, tu.ID, commerce.Actor{UserID: "other"})
		require.ErrorIs(t, err, commerce.ErrTopUpNotFound)
		assert.Equal(t, ledger.Balance{Available: 31_000, Total: 31_000}, balance(t, e, user))
		assert.Equal(t, 1, e.PG.Charges(tu.PaymentID))
		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}

// TestTopUpGatewayUnreached: a top-up whose call the PG certainly did not receive is a 503
// with nothing charged; its retry with the key makes a new attempt and charges once; one
// whose client never comes back is failed by recovery after the order expiry.
func TestTopUpGatewayUnreached(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		user := e.ID("user")
		req := commerce.TopUpRequest{UserID: user, Amount: 30_000, Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: "t1"}
		left := req
		left.IdempotencyKey = "t2"
		e.PG.SetFault(pgsim.FaultUnavailable)
		for _, r := range []commerce.TopUpRequest{req, req, left} {
			_, err := e.Service.TopUp(ctx, r)
			requireUnreached(t, err)
		}
		rep, err := e.Reconciler.Reconcile(ctx)
		require.NoError(t, err)
		assert.Zero(t, rep.Examined, "nothing for the reconciler to send")
		_, err = e.Service.Recover(ctx)
		require.NoError(t, err)
		assert.Zero(t, e.PG.Stats().Charges)
		assert.Equal(t, ledger.Balance{}, balance(t, e, user))

		e.PG.SetFault(pgsim.FaultNone)
		tu, err := e.Service.TopUp(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpCompleted, tu.Status)
		assert.Equal(t, "pay-"+tu.ID+"-3", tu.PaymentID, "a new payment per attempt")
		again, err := e.Service.TopUp(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, tu, again)
		assert.Equal(t, 1, e.PG.Stats().Charges, "charged once in all")
		assert.Equal(t, ledger.Balance{Available: 30_000, Total: 30_000}, balance(t, e, user))

		e.Clock.Advance(commerce.DefaultOrderExpiry)
		_, err = e.Service.Recover(ctx)
		require.NoError(t, err)
		gone, err := e.Service.TopUp(ctx, left)
		require.NoError(t, err)
		assert.Equal(t, []any{commerce.TopUpFailed, commerce.FailurePGUnreached}, []any{gone.Status, gone.FailureCode})
		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}

func TestCatalog(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		np := commerce.NewProduct{ID: "p-1", Name: "Mug", Price: 12_000, Stock: 5, BuyerLimit: 2}
		p, err := e.Service.CreateProduct(ctx, np)
		require.NoError(t, err)
		assert.Equal(t, inventory.Stock{SKU: "p-1", OnHand: 5, Available: 5, BuyerLimit: 2}, p.Stock)
		_, err = e.Service.SetStock(ctx, "p-1", 7, 2)
		require.NoError(t, err)
		again, err := e.Service.CreateProduct(ctx, np)
		require.NoError(t, err)
		assert.Equal(t, int64(7), again.Stock.OnHand, "a replayed create does not reset the stock")
		np.Price = 1
		_, err = e.Service.CreateProduct(ctx, np)
		require.ErrorIs(t, err, commerce.ErrIdempotencyConflict)
		_, err = e.Service.CreateProduct(ctx, commerce.NewProduct{ID: "p,2", Name: "x", Price: 1})
		require.ErrorIs(t, err, commerce.ErrInvalidRequest)
		_, err = e.Service.CreateProduct(ctx, commerce.NewProduct{ID: "p-2", Name: "x\x00", Price: 1})
		require.ErrorIs(t, err, commerce.ErrInvalidRequest)

		p, err = e.Service.UpdatePrice(ctx, "p-1", 13_000)
		require.NoError(t, err)
		assert.Equal(t, int64(13_000), p.Price)
		_, err = e.Service.UpdatePrice(ctx, "nope", 1)
		require.ErrorIs(t, err, commerce.ErrProductNotFound)
		_, err = e.Service.GetProduct(ctx, "nope")
		require.ErrorIs(t, err, commerce.ErrProductNotFound)

		for i := range 4 {
			_, err := e.Service.CreateProduct(ctx, commerce.NewProduct{ID: "q-" + string(rune('a'+i)), Name: "Q", Price: 100, Stock: int64(i)})
			require.NoError(t, err)
		}
		var ids []string
		for cursor := ""; ; {
			page, err := e.Service.ListProducts(ctx, commerce.ProductQuery{Limit: 2, Cursor: cursor})
			require.NoError(t, err)
			for _, p := range page.Products {
				ids = append(ids, p.ID)
				assert.Equal(t, p.ID, p.Stock.SKU)
			}
			if cursor = page.Next; cursor == "" {
				break
			}
		}
		assert.Equal(t, []string{"p-1", "q-a", "q-b", "q-c", "q-d"}, ids)
		_, err = e.Service.ListProducts(ctx, commerce.ProductQuery{Cursor: "q\x00"})
		require.ErrorIs(t, err, commerce.ErrInvalidRequest)
		st, err := e.Service.Stocks(ctx, []string{"q-c", "unknown"})
		require.NoError(t, err)
		assert.Equal(t, map[string]inventory.Stock{"q-c": {SKU: "q-c", OnHand: 2, Available: 2}}, st)

		// The buyer limit holds across orders; the price is the one at placement.
		u := newBuyer(t, e, 0, 0)
		o := place(t, e, u, "p-1", 2, 0)
		assert.Equal(t, int64(26_000), o.Subtotal)
		_, err = e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: u.user, Lines: []commerce.Line{{ProductID: "p-1", Qty: 1}}, IdempotencyKey: "k"})
		require.ErrorIs(t, err, commerce.ErrBuyerLimit)
		require.NoError(t, e.Service.Ready(ctx))
		e.RequireClean(t)
	})
}

func TestListOrders(t *testing.T) {
	e := commercetest.SQLite(t)
	sku := e.Product(t, 100, 100)
	b := newBuyer(t, e, 0, 0)
	var want []string
	for range 5 {
		o := place(t, e, b, sku, 1, 0)
		want = append([]string{o.ID}, want...)
		e.Clock.Advance(time.Second)
	}
	place(t, e, newBuyer(t, e, 0, 0), sku, 1, 0)
	var got []string
	for cursor := ""; ; {
		page, err := e.Service.ListOrders(ctx, b.user, commerce.OrderQuery{Limit: 2, Cursor: cursor})
		require.NoError(t, err)
		for _, o := range page.Orders {
			got = append(got, o.ID)
			assert.Len(t, o.Lines, 1)
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	assert.Equal(t, want, got, "newest first, the user's own")
	for _, q := range []commerce.OrderQuery{
		{Cursor: "garbage"}, {Cursor: "1_a\x00"},
		{Status: "paid"}, // a filter no order can match is a mistake, not an empty page
	} {
		_, err := e.Service.ListOrders(ctx, b.user, q)
		require.ErrorIs(t, err, commerce.ErrInvalidRequest, "%+v", q)
	}
}

// The audit is not vacuous: changes behind commerce's back are reported.
func TestAuditFindsDiscrepancies(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 1_000, 0)
		o := place(t, e, b, sku, 1, 1_000)
		paid := pay(t, e, place(t, e, newBuyer(t, e, 0, 0), sku, 1, 0), "tok_ok")
		e.RequireClean(t)

		require.NoError(t, e.Inventory.Release(ctx, o.ID))
		_, err := e.Ledger.Void(ctx, "hold-"+o.ID)
		require.NoError(t, err)
		_, err = e.DB.NewDelete().Table("outbox_events").Where("id = ?", paid.ID+"-payment-completed").Exec(ctx)
		require.NoError(t, err)
		rep, err := e.Service.Audit(ctx)
		require.NoError(t, err)
		kinds := map[string]bool{}
		for _, d := range rep.Discrepancies {
			kinds[d.Kind] = true
		}
		assert.Equal(t, map[string]bool{"reservation": true, "stock.reserved": true, "points": true, "event": true}, kinds, "%v", rep.Discrepancies)
		assert.False(t, rep.OK())
	})
}

// TestObserver: each outcome is reported once, labelled with the payment method (none
// before Pay chose one; POINTS for an order paid by points alone).
func TestObserver(t *testing.T) {
	counts := map[string]int{}
	obs := observe.Func(func(e observe.Event) { counts[e.Name+" "+e.Labels["method"]]++ })
	e := commercetest.SQLite(t, commerce.WithObserver(obs))
	sku := e.Product(t, 10_000, 10)
	b := newBuyer(t, e, 0, 0)
	pay(t, e, place(t, e, b, sku, 1, 0), "tok_ok")
	pay(t, e, place(t, e, b, sku, 1, 0), pgsim.TokenDecline)
	_, err := e.Service.Cancel(ctx, place(t, e, b, sku, 1, 0).ID, commerce.Actor{UserID: b.user})
	require.NoError(t, err)
	place(t, e, b, sku, 1, 0)
	e.Clock.Advance(commerce.DefaultOrderExpiry)
	_, err = e.Service.Expire(ctx)
	require.NoError(t, err)
	rich := newBuyer(t, e, 10_000, 0)
	pay(t, e, place(t, e, rich, sku, 1, 10_000), "")
	assert.Equal(t, map[string]int{
		"placed none": 4, "placed POINTS": 1, "paid CARD": 1, "paid POINTS": 1, "payment_failed CARD": 1,
		"cancelled none": 1, "expired none": 1,
	}, counts)
}

// TestErrorCodes: commerce's errors carry the shared vocabulary's codes and reasons.
func TestErrorCodes(t *testing.T) {
	for _, c := range []struct {
		err    error
		code   errcode.Code
		reason string
	}{
		{errors.Join(commerce.ErrOutOfStock), errcode.FailedPrecondition, "out_of_stock"},
		{&commerce.CancelWindowError{}, errcode.FailedPrecondition, "cancel_window_closed"},
		{&commerce.StateError{}, errcode.Conflict, "invalid_order_state"},
		{commerce.NewConflictError("order", "k"), errcode.AlreadyExists, "idempotency_key_reused"},
		{&commerce.ValidationError{Field: "Qty", Reason: "must be positive"}, errcode.InvalidArgument, "invalid_request"},
		{errors.New("boom"), errcode.Unknown, "unknown"},
	} {
		code, reason := errcode.Of(c.err)
		assert.Equal(t, c.code, code, c.err)
		assert.Equal(t, c.reason, reason, c.err)
	}
	assert.ErrorIs(t, &commerce.ConflictError{}, errcode.ErrKeyReused)
}

func TestNewValidatesConfig(t *testing.T) {
	e := commercetest.SQLite(t)
	_, err := commerce.New(commerce.Config{DB: e.DB})
	require.ErrorIs(t, err, commerce.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "[Inventory Coupons Ledger Payments Outbox]")
	cfg := commerce.Config{DB: e.DB, Inventory: e.Inventory, Coupons: e.Coupons, Ledger: e.Ledger, Payments: e.Payments, Outbox: &outbox.Writer{}}
	for _, opt := range []commerce.Option{commerce.WithPaymentWindow(31 * 24 * time.Hour), commerce.WithTopic("")} {
		_, err := commerce.New(cfg, opt)
		require.ErrorIs(t, err, commerce.ErrInvalidConfig)
	}
	construct := func(opts ...commerce.Option) (*commerce.Service, error) { return commerce.New(cfg, opts...) }
	testkit.RefusesBadOptions(t, construct, map[string]commerce.Option{
		"WithClock: nil":                      commerce.WithClock(nil),
		"WithLogger: nil":                     commerce.WithLogger(nil),
		"WithObserver: nil":                   commerce.WithObserver(nil),
		"WithFaultHook: nil":                  commerce.WithFaultHook(nil),
		"WithOrderExpiry: 0s":                 commerce.WithOrderExpiry(0),
		"WithPaymentWindow: -1s":              commerce.WithPaymentWindow(-time.Second),
		"WithCancelWindow: -1h0m0s":           commerce.WithCancelWindow(-time.Hour),
		"WithRewardRate: 10001":               commerce.WithRewardRate(10_001),
		"WithRewardRate: -1":                  commerce.WithRewardRate(-1),
		"WithSweepInterval: 0s":               commerce.WithSweepInterval(0),
		"WithRecovery: after -1s":             commerce.WithRecovery(-time.Second, time.Second),
		"WithRecovery: 0s":                    commerce.WithRecovery(time.Second, 0),
		"WithEventRetention: 0s":              commerce.WithEventRetention(0),
		"WithUnpaidLimits: -1 per product":    commerce.WithUnpaidLimits(-1, 10),
		"WithUnpaidLimits: 1 per product, -1": commerce.WithUnpaidLimits(1, -1),
	}, commerce.ErrInvalidConfig)
	_, err = commerce.New(cfg, commerce.WithRewardRate(0), commerce.WithUnpaidLimits(0, 0), commerce.WithRecovery(0, time.Second))
	require.NoError(t, err)
}

// TestHoldsShareOneDeadline: an order's units, points and coupon are held until the same
// deadline, its expiry plus the payment window; past it the coupon restores itself too.
func TestHoldsShareOneDeadline(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		b := newBuyer(t, e, 1_000, 1_000)
		o := place(t, e, b, e.Product(t, 10_000, 5), 1, 500)
		deadline := o.ExpiresAt.Add(commerce.DefaultPaymentWindow)

		res, err := e.Inventory.Get(ctx, o.ID)
		require.NoError(t, err)
		assert.WithinDuration(t, deadline, res.ExpiresAt, time.Millisecond)
		h, err := e.Ledger.LookupHold(ctx, "hold-"+o.ID)
		require.NoError(t, err)
		assert.WithinDuration(t, deadline, h.Deadline, time.Millisecond)
		reds, err := e.Coupons.Redemptions(ctx, o.ID)
		require.NoError(t, err)
		require.Len(t, reds, 1)
		assert.WithinDuration(t, deadline, reds[0].HoldDeadline, time.Millisecond)

		e.Clock.Advance(deadline.Sub(e.Clock.Now()))
		n, err := e.Coupons.Sweep(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		reds, err = e.Coupons.Redemptions(ctx, o.ID)
		require.NoError(t, err)
		assert.Equal(t, coupon.RedemptionExpired, reds[0].State)
		_, err = e.Service.Expire(ctx)
		require.NoError(t, err)
		got, err := e.Service.GetOrder(ctx, o.ID, commerce.Actor{Admin: true})
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusExpired, got.Status)
		e.RequireClean(t)
	})
}

// TestOrderReadSurvivesAnUnknownColumn: a column this build does not know (added by a
// newer release's migration during a rolling deploy, or by an operator) leaves orders
// readable: the reads name the model's columns.
func TestOrderReadSurvivesAnUnknownColumn(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 1_000, 10)
		user := e.ID("user")
		placed, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: user, IdempotencyKey: "k",
			Lines: []commerce.Line{{ProductID: sku, Qty: 1}}})
		require.NoError(t, err)
		_, err = e.DB.ExecContext(ctx, "ALTER TABLE commerce_orders ADD COLUMN added_later VARCHAR(20) NULL")
		require.NoError(t, err)
		got, err := e.Service.GetOrder(ctx, placed.ID, commerce.Actor{UserID: user})
		require.NoError(t, err)
		require.Equal(t, placed, got)
	})
}

// TestCreateSchemaAddsTheShortfall: commerce_orders created before the column
// reward_shortfall gets it from CreateSchema; its orders read a shortfall of 0.
func TestCreateSchemaAddsTheShortfall(t *testing.T) {
	e := commercetest.SQLite(t)
	b := newBuyer(t, e, 0, 0)
	_, o := spentOrder(t, e, b, 1, 0, 0)
	_, err := e.DB.ExecContext(ctx, "ALTER TABLE commerce_orders DROP COLUMN reward_shortfall")
	require.NoError(t, err)
	require.NoError(t, commerce.CreateSchema(ctx, e.DB))
	require.NoError(t, commerce.CreateSchema(ctx, e.DB), "idempotent")
	got, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
	require.NoError(t, err)
	assert.Equal(t, [3]int64{0, 0, o.AmountDue}, [3]int64{got.RewardShortfall, got.RefundPoints, got.RefundAmount})
	e.RequireClean(t)
}

// Every refused PlaceOrder, on every configuration (with Redis the units are reserved
// before the transaction that refuses), changes nothing: no units held, no buyer allowance
// used, no points held, the coupon untouched, no order; the same user then buys up to the
// buyer limit at once.
func TestRefusedPlaceChangesNothing(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		_, err := e.Service.SetStock(ctx, sku, 10, 3)
		require.NoError(t, err)
		b := newBuyer(t, e, 1_000, 2_000)
		other := newBuyer(t, e, 0, 2_000)
		for name, c := range map[string]struct {
			req  commerce.PlaceOrderRequest
			want error
		}{
			"points above balance": {commerce.PlaceOrderRequest{Points: 1_001}, commerce.ErrInsufficientPoints},
			"points above order":   {commerce.PlaceOrderRequest{Points: 30_001}, commerce.ErrInvalidRequest},
			"huge points":          {commerce.PlaceOrderRequest{Points: 1 << 62}, commerce.ErrInvalidRequest},
			"another's coupon":     {commerce.PlaceOrderRequest{CouponID: other.coupon}, commerce.ErrCouponUnusable},
			"unknown coupon":       {commerce.PlaceOrderRequest{CouponID: "nope"}, commerce.ErrCouponUnusable},
			"over buyer limit":     {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: 4}}}, commerce.ErrBuyerLimit},
			"unknown product line": {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: 1}, {ProductID: "nope", Qty: 1}}}, commerce.ErrProductNotFound},
			"negative quantity":    {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: -1}}}, commerce.ErrInvalidRequest},
			"duplicates past 999": {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: 999}, {ProductID: sku, Qty: 1}}},
				commerce.ErrInvalidRequest},
			"coupon covers all but points": {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: 1}}, CouponID: b.coupon,
				Points: 8_000}, commerce.ErrPaymentRule},
		} {
			t.Run(name, func(t *testing.T) {
				req := c.req
				req.UserID, req.IdempotencyKey = b.user, e.ID("key")
				if req.Lines == nil {
					req.Lines = []commerce.Line{{ProductID: sku, Qty: 3}}
				}
				_, err := e.Service.PlaceOrder(ctx, req)
				require.ErrorIs(t, err, c.want)
				requireStock(t, e, sku, 10, 0, 0)
				assert.Equal(t, ledger.Balance{Available: 1_000, Total: 1_000}, balance(t, e, b.user))
				assert.Equal(t, coupon.StateAvailable, couponState(t, e, b.coupon))
				assert.Equal(t, coupon.StateAvailable, couponState(t, e, other.coupon))
				_, err = e.Service.OrderByKey(ctx, b.user, req.IdempotencyKey)
				require.ErrorIs(t, err, commerce.ErrOrderNotFound)
			})
		}
		o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: b.user, IdempotencyKey: "full",
			Lines: []commerce.Line{{ProductID: sku, Qty: 3}}, CouponID: b.coupon, Points: 1_000})
		require.NoError(t, err, "the buyer limit and the holds are intact")
		requireStock(t, e, sku, 7, 3, 0)
		pay(t, e, o, "tok_ok")
		e.RequireClean(t)
	})
}

// withBreaker puts e's gateway behind the resilient policies (no retry; a breaker opening
// at the first failure for openFor) and rebuilds e's payments and checkout on it.
func withBreaker(t *testing.T, e *commercetest.Env, openFor time.Duration) *resilient.Gateway {
	t.Helper()
	gw := testkit.Must(resilient.Wrap(e.Gateway, resilient.WithRetries(1, time.Millisecond, time.Millisecond),
		resilient.WithBreaker(1, 1, openFor), resilient.WithHalfOpenSuccesses(1)))(t)
	now := e.Clock.Now
	e.Payments = testkit.Must(payment.New(e.DB, gw, payment.WithClock(now), payment.WithWebhookVerifier(e.PG.WebhookVerifier())))(t)
	e.Reconciler = testkit.Must(payment.NewReconciler(e.Payments, payment.WithThreshold(0)))(t)
	writer := testkit.Must(outbox.NewWriter(outbox.WithClock(now)))(t)
	e.Service = testkit.Must(commerce.New(commerce.Config{
		DB: e.DB, Inventory: e.Inventory, Coupons: e.Coupons, Ledger: e.Ledger, Payments: e.Payments,
		Reconciler: e.Reconciler, Outbox: writer, Relay: e.Relay,
	}, commerce.WithClock(now)))(t)
	return gw
}

// TestTopUpConcurrentRetriesChargeOnce: an abandoned top-up's key sent 8 times at once
// while the PG refuses the first call of the new attempt: one call makes the attempt, the
// others take its payment up, so whichever call is refused no payment is charged after
// being abandoned (nothing to refund), and the user is charged once.
func TestTopUpConcurrentRetriesChargeOnce(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		user := e.ID("user")
		req := commerce.TopUpRequest{UserID: user, Amount: 5_000, Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: "t1"}
		e.PG.SetFault(pgsim.FaultUnavailable)
		_, err := e.Service.TopUp(ctx, req)
		requireUnreached(t, err)
		e.PG.SetFault(pgsim.FaultNone)
		var id string
		require.NoError(t, e.DB.NewSelect().Table("commerce_topups").Column("id").Where("user_id = ?", user).Scan(ctx, &id))
		e.PG.InjectFault("pay-"+id+"-2", pgsim.FaultUnavailable, 1)

		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if _, err := e.Service.TopUp(ctx, req); err != nil {
					assert.ErrorIs(t, err, errcode.ErrUnavailable)
				}
			})
		}
		wg.Wait()
		e.Settle(t)
		tu, err := e.Service.TopUp(ctx, req) // a last retry, should the new attempt have been abandoned
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpCompleted, tu.Status)
		assert.Equal(t, 1, e.PG.Stats().Charges)
		n, err := e.DB.NewSelect().Table("payment_refunds").Where("payment_id LIKE ?", "pay-"+id+"%").Count(ctx)
		require.NoError(t, err)
		assert.Zero(t, n, "no abandoned payment charged, so none refunded")
		assert.Equal(t, ledger.Balance{Available: 5_000, Total: 5_000}, balance(t, e, user))
		e.RequireClean(t)
	})
}

// TestTopUpRetryWhileBreakerOpen: a top-up abandoned when the PG refused its call (which
// opened the breaker) and retried while the breaker is still open is answered 503 again
// without a new attempt; once the breaker closes the retry makes one, charged once.
func TestTopUpRetryWhileBreakerOpen(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		gw := withBreaker(t, e, 500*time.Millisecond)
		top := commerce.TopUpRequest{UserID: e.ID("user"), Amount: 5_000, Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: "top"}
		e.PG.SetFault(pgsim.FaultUnavailable)
		_, err := e.Service.TopUp(ctx, top)
		require.ErrorIs(t, err, errcode.ErrUnavailable)
		assert.ErrorIs(t, err, payment.ErrAbandoned)
		require.Equal(t, resilient.BreakerOpen, gw.BreakerState())
		assert.Positive(t, errcode.RetryAfter(err, 0))
		assert.LessOrEqual(t, errcode.RetryAfter(err, 0), 500*time.Millisecond, "the breaker's remaining delay")
		_, err = e.Service.TopUp(ctx, top)
		require.ErrorIs(t, err, errcode.ErrUnavailable)
		assert.ErrorIs(t, err, resilient.ErrBreakerOpen)
		n, err := e.DB.NewSelect().Table("payment_payments").Where("order_id LIKE ?", "top_%").Count(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 1, n, "no new attempt while the breaker is open")

		e.PG.SetFault(pgsim.FaultNone)
		require.Eventually(t, func() bool { return gw.Ready() == nil }, 10*time.Second, 10*time.Millisecond)
		tu, err := e.Service.TopUp(ctx, top)
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpCompleted, tu.Status)
		assert.Equal(t, "pay-"+tu.ID+"-2", tu.PaymentID)
		assert.Equal(t, 1, e.PG.Stats().Charges)
		e.RequireClean(t)
	})
}

// requireHeld checks that f's order (see placed) still holds everything it held when placed.
func requireHeld(t *testing.T, e *commercetest.Env, f *fixture) {
	t.Helper()
	requireStock(t, e, f.sku, 3, 2, 0)
	assert.Equal(t, ledger.Balance{Available: 3_000, Held: 2_000, Total: 5_000}, balance(t, e, f.b.user))
	assert.Equal(t, coupon.StateReserved, couponState(t, e, f.b.coupon))
}

// TestPayWhileBreakerOpen: while the PG's circuit breaker is open, Pay answers at once that
// the PG is unavailable (errcode.ErrUnavailable, retry after the breaker's remaining delay),
// without claiming the order, recording a payment or calling the PG; the order keeps its
// holds, and once the PG is back the same request pays it.
func TestPayWhileBreakerOpen(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		const openFor = 500 * time.Millisecond
		gw := withBreaker(t, e, openFor)
		f := placed(t, e)
		o := f.order

		e.PG.SetFault(pgsim.FaultUnavailable)
		_, err := gw.Approve(ctx, payment.ApproveRequest{PaymentID: "probe", OrderID: "probe", Amount: 1, Currency: "KRW", Method: payment.MethodCard})
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		require.Equal(t, resilient.BreakerOpen, gw.BreakerState())
		calls := e.PG.Stats().ApproveCalls

		_, err = e.Service.Pay(ctx, cardPayment(o, "tok_ok"))
		require.ErrorIs(t, err, errcode.ErrUnavailable)
		assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		assert.Equal(t, errcode.DependencyUnavailable, errcode.CodeOf(err))
		wait := errcode.RetryAfter(err, 0)
		assert.Positive(t, wait)
		assert.LessOrEqual(t, wait, openFor)
		assert.Equal(t, calls, e.PG.Stats().ApproveCalls, "the PG is not called")
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPendingPayment, got.Status)
		assert.Empty(t, got.PaymentID)
		assert.Empty(t, got.Step)
		assert.Empty(t, testkit.Must(e.Payments.ByOrder(ctx, o.ID))(t), "no payment recorded")
		requireHeld(t, e, f)
		top := commerce.TopUpRequest{UserID: o.UserID, Amount: 5_000, Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: "top"}
		_, err = e.Service.TopUp(ctx, top)
		require.ErrorIs(t, err, errcode.ErrUnavailable, "a top-up too")
		n, err := e.DB.NewSelect().Table("commerce_topups").Where("user_id = ?", o.UserID).Count(ctx)
		require.NoError(t, err)
		assert.Zero(t, n, "no top-up recorded")
		assert.Equal(t, calls, e.PG.Stats().ApproveCalls, "the PG is not called")

		e.PG.SetFault(pgsim.FaultNone)
		require.Eventually(t, func() bool { return gw.Ready() == nil }, 10*time.Second, 10*time.Millisecond)
		tu, err := e.Service.TopUp(ctx, top)
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpCompleted, tu.Status)
		o = pay(t, e, o, "tok_ok")
		assert.Equal(t, commerce.StatusPaid, o.Status)
		assert.Equal(t, 1, e.PG.Charges(o.PaymentID))
		requireStock(t, e, f.sku, 3, 0, 2)
		e.RequireClean(t)
	})
}

// requireUnreached checks Pay's answer when the PG was not reached: a dependency failure
// (HTTP 503) whose payment was abandoned, to retry after DefaultPGRetryAfter.
func requireUnreached(t *testing.T, err error) {
	t.Helper()
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	assert.ErrorIs(t, err, payment.ErrAbandoned)
	assert.Equal(t, errcode.DependencyUnavailable, errcode.CodeOf(err))
	assert.Equal(t, commerce.DefaultPGRetryAfter, errcode.RetryAfter(err, 0))
}

// TestPayGatewayUnreached: a Pay whose PG call was refused unprocessed fails at once as a
// dependency failure; its payment is ABANDONED, nothing is charged, and the order is
// PENDING_PAYMENT again with all its holds, for the buyer to pay again or cancel. Neither
// the reconciler nor recovery sends the abandoned payment. Once the PG is back, Pay — with
// the first key again — charges exactly once, under a new payment ID.
func TestPayGatewayUnreached(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		f := placed(t, e)
		o := f.order
		first := cardPayment(o, "tok_ok")
		second := first
		second.IdempotencyKey = "another-key"

		e.PG.SetFault(pgsim.FaultUnavailable)
		ids := []string{"pay-" + o.ID, "pay-" + o.ID + "-2"}
		for i, req := range []commerce.PayRequest{first, second} {
			_, err := e.Service.Pay(ctx, req)
			requireUnreached(t, err)
			got := order(t, e, o.ID)
			assert.Equal(t, commerce.StatusPendingPayment, got.Status)
			assert.Empty(t, got.Step)
			assert.Empty(t, got.PayMethod)
			assert.Equal(t, ids[i], got.PaymentID, "a new payment ID per attempt")
			assert.Equal(t, payment.StateAbandoned, paymentOf(t, e, ids[i]).State)
			requireHeld(t, e, f)
		}
		rep, err := e.Reconciler.Reconcile(ctx)
		require.NoError(t, err)
		assert.Zero(t, rep.Examined, "nothing for the reconciler to send")
		rec, err := e.Service.Recover(ctx)
		require.NoError(t, err)
		assert.Zero(t, rec.Examined, "nothing for recovery to do")
		assert.Zero(t, e.PG.Stats().Charges)
		e.PG.SetFault(pgsim.FaultNone)
		e.RequireClean(t)

		paid := pay(t, e, o, "tok_ok") // the first key again
		assert.Equal(t, commerce.StatusPaid, paid.Status)
		assert.Equal(t, "pay-"+o.ID+"-3", paid.PaymentID)
		assert.Equal(t, payment.MethodCard, paid.PayMethod)
		assert.Equal(t, 1, e.PG.Charges(paid.PaymentID))
		assert.Equal(t, 1, e.PG.Stats().Charges, "charged once in all")
		for _, id := range ids {
			assert.Equal(t, 1, e.PG.ApproveCalls(id), "an abandoned payment is sent once, refused")
			assert.Equal(t, payment.StateAbandoned, paymentOf(t, e, id).State)
		}
		again, err := e.Service.Pay(ctx, first)
		require.NoError(t, err)
		assert.Equal(t, paid, again, "a replay answers the same")
		_, err = e.Service.Pay(ctx, second)
		require.ErrorAs(t, err, new(*commerce.StateError), "the other key finds the order paid")
		requireStock(t, e, f.sku, 3, 0, 2)
		assert.Equal(t, ledger.Balance{Available: 3_150, Total: 3_150}, balance(t, e, f.b.user))
		assert.Equal(t, coupon.StateUsed, couponState(t, e, f.b.coupon))
		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}

// TestPayAbandonedCrashIsFinished: a crash between abandoning the payment and reopening the
// order leaves it PAYING on an ABANDONED payment; Recover reopens it, and so does the
// client's retry (answering 503 as the interrupted request would have); either way the next
// Pay charges once under a new payment ID.
func TestPayAbandonedCrashIsFinished(t *testing.T) {
	hook := &commercetest.Hook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		for _, byRecover := range []bool{true, false} {
			f := placed(t, e)
			o := f.order
			req := cardPayment(o, "tok_ok")

			e.PG.SetFault(pgsim.FaultUnavailable)
			hook.FailAt(commerce.StepPayAbandoned)
			_, err := e.Service.Pay(ctx, req)
			require.ErrorIs(t, err, commerce.ErrInjected)
			got := order(t, e, o.ID)
			require.Equal(t, commerce.StatusPaying, got.Status)
			require.Equal(t, payment.StateAbandoned, paymentOf(t, e, got.PaymentID).State)
			e.PG.SetFault(pgsim.FaultNone)

			if byRecover {
				rep, err := e.Service.Recover(ctx)
				require.NoError(t, err)
				assert.Equal(t, 1, rep.Advanced)
			} else {
				_, err := e.Service.Pay(ctx, req)
				requireUnreached(t, err)
			}
			got = order(t, e, o.ID)
			assert.Equal(t, commerce.StatusPendingPayment, got.Status)
			assert.Empty(t, got.Step)
			requireHeld(t, e, f)

			paid := pay(t, e, o, "tok_ok")
			assert.Equal(t, commerce.StatusPaid, paid.Status)
			assert.Equal(t, "pay-"+o.ID+"-2", paid.PaymentID)
			assert.Equal(t, 1, e.PG.Charges(paid.PaymentID))
			assert.Zero(t, e.PG.Charges("pay-"+o.ID))
			requireStock(t, e, f.sku, 3, 0, 2)
		}
		e.RequireClean(t)
	}, commerce.WithFaultHook(hook.Func))
}

// TestPayAbandonRacesReconciler: Pays whose PG call is refused race the payment reconciler,
// which may find their payments REQUESTED and send them itself. Each payment is either
// abandoned and never charged, or sent and charged once, never both; once everything is
// settled and the reopened orders paid again, every order is PAID, charged exactly once in
// all.
func TestPayAbandonRacesReconciler(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		const n = 8
		sku := e.Product(t, 1_000, n)
		orders := make([]commerce.Order, n)
		for i := range orders {
			orders[i] = place(t, e, newBuyer(t, e, 0, 0), sku, 1, 0)
			e.PG.InjectFault("pay-"+orders[i].ID, pgsim.FaultUnavailable, 1) // whoever sends it first
		}
		stop := make(chan struct{})
		var reconciler, pays sync.WaitGroup
		reconciler.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := e.Reconciler.Reconcile(ctx)
				assert.NoError(t, err)
			}
		})
		for _, o := range orders {
			pays.Go(func() {
				if _, err := e.Service.Pay(ctx, cardPayment(o, "tok_ok")); err != nil {
					assert.ErrorIs(t, err, payment.ErrAbandoned)
				}
			})
		}
		pays.Wait()
		close(stop)
		reconciler.Wait()

		abandoned := 0
		for _, o := range orders {
			p := paymentOf(t, e, "pay-"+o.ID)
			if p.State == payment.StateAbandoned {
				abandoned++
				assert.Zero(t, e.PG.Charges(p.ID), "an abandoned payment is never charged")
			} else {
				assert.LessOrEqual(t, e.PG.Charges(p.ID), 1)
			}
		}
		t.Logf("%d of %d payments abandoned", abandoned, n)

		e.Clock.Advance(time.Second) // past the reconciler's take-ups
		e.Settle(t)
		for _, o := range orders {
			got := order(t, e, o.ID)
			if got.Status == commerce.StatusPendingPayment {
				got = pay(t, e, o, "tok_ok")
			}
			assert.Equal(t, commerce.StatusPaid, got.Status, o.ID)
			charges := 0
			for _, p := range testkit.Must(e.Payments.ByOrder(ctx, o.ID))(t) {
				charges += e.PG.Charges(p.ID)
			}
			assert.Equal(t, 1, charges, "%s charged once in all", o.ID)
		}
		assert.Equal(t, n, e.PG.Stats().Charges)
		assert.Zero(t, e.PG.Stats().Cancels, "nothing to refund")
		requireStock(t, e, sku, 0, 0, n)
		e.RequireClean(t)
	})
}

// TestAbandonedPaymentApprovedAnyway: should the PG, against its word, approve a payment
// that was abandoned, its webhook records the PG's truth (ABANDONED -> APPROVED) and, in the
// same transaction, the refund of that charge that no order pays by, which is sent at once;
// the order paid by a later attempt is unchanged.
func TestAbandonedPaymentApprovedAnyway(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		o := place(t, e, newBuyer(t, e, 0, 0), sku, 1, 0)
		e.PG.SetFault(pgsim.FaultUnavailable)
		_, err := e.Service.Pay(ctx, cardPayment(o, "tok_ok"))
		requireUnreached(t, err)
		e.PG.SetFault(pgsim.FaultNone)
		paid := pay(t, e, o, "tok_ok")
		require.Equal(t, commerce.StatusPaid, paid.Status)
		e.RequireClean(t)

		abandoned := "pay-" + o.ID
		_, err = e.PG.Approve(ctx, payment.ApproveRequest{PaymentID: abandoned, OrderID: o.ID, Amount: o.AmountDue,
			Currency: "KRW", Method: payment.MethodCard, Token: "tok_ok"})
		require.NoError(t, err)
		body, sig, err := e.PG.Webhook(abandoned)
		require.NoError(t, err)
		require.NoError(t, e.Service.HandlePaymentWebhook(ctx, body, sig))
		// Nothing fulfils the abandoned payment: its charge is refunded, once, and the order
		// paid by the next attempt is untouched.
		p := paymentOf(t, e, abandoned)
		assert.Equal(t, []any{payment.StateRefunded, o.AmountDue}, []any{p.State, p.Refunded})
		require.NoError(t, e.Service.HandlePaymentWebhook(ctx, body, sig), "a redelivery")
		refunds := testkit.Must(e.Payments.Refunds(ctx, abandoned))(t)
		require.Len(t, refunds, 1)
		assert.Equal(t, payment.RefundSucceeded, refunds[0].State)
		assert.Equal(t, paid, order(t, e, o.ID))
		e.RequireClean(t)
	})
}
