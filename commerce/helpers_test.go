package commerce_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var ctx = context.Background()

// each runs fn on every configuration, each with a fresh Env.
func each(t *testing.T, fn func(t *testing.T, e *commercetest.Env), opts ...commerce.Option) {
	for _, c := range commercetest.Configs {
		t.Run(c.Name, func(t *testing.T) { fn(t, c.New(t, opts...)) })
	}
}

// buyer is a user with points and a coupon, ready to order.
type buyer struct {
	user   string
	coupon string
}

func newBuyer(t *testing.T, e *commercetest.Env, points, couponAmount int64) buyer {
	t.Helper()
	b := buyer{user: e.ID("user")}
	if points > 0 {
		e.GivePoints(t, b.user, points)
	}
	if couponAmount > 0 {
		b.coupon = e.GiveCoupon(t, e.CouponTemplate(t, couponAmount), b.user)
	}
	return b
}

func place(t *testing.T, e *commercetest.Env, b buyer, sku string, qty, points int64) commerce.Order {
	t.Helper()
	o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{
		UserID: b.user, Lines: []commerce.Line{{ProductID: sku, Qty: qty}}, CouponID: b.coupon, Points: points,
		IdempotencyKey: e.ID("place"),
	})
	require.NoError(t, err)
	require.Equal(t, commerce.StatusPendingPayment, o.Status)
	return o
}

func pay(t *testing.T, e *commercetest.Env, o commerce.Order, token string) commerce.Order {
	t.Helper()
	got, err := e.Service.Pay(ctx, cardPayment(o, token))
	require.NoError(t, err)
	return got
}

// cardPayment is the buyer's request to pay o by card with token.
func cardPayment(o commerce.Order, token string) commerce.PayRequest {
	return commerce.PayRequest{OrderID: o.ID, UserID: o.UserID, Method: payment.MethodCard, Token: token, IdempotencyKey: "pay-" + o.ID}
}

func stock(t *testing.T, e *commercetest.Env, sku string) inventory.Stock {
	t.Helper()
	return testkit.Must(e.Inventory.Stock(ctx, sku))(t)
}

func balance(t *testing.T, e *commercetest.Env, user string) ledger.Balance {
	t.Helper()
	return testkit.Must(e.Service.Points(ctx, user))(t)
}

func order(t *testing.T, e *commercetest.Env, id string) commerce.Order {
	t.Helper()
	return testkit.Must(e.Service.GetOrder(ctx, id, commerce.Actor{Admin: true}))(t)
}

func paymentOf(t *testing.T, e *commercetest.Env, id string) payment.Payment {
	t.Helper()
	return testkit.Must(e.Payments.Get(ctx, id))(t)
}

func couponState(t *testing.T, e *commercetest.Env, id string) coupon.State {
	t.Helper()
	return testkit.Must(e.Coupons.Coupon(ctx, id))(t).State
}

// payPastDeadline pays o while the PG fails without an answer (the order is PAYING) and
// lets the reservation and the holds expire and be swept: an approval coming now is too late.
func payPastDeadline(t *testing.T, e *commercetest.Env, o commerce.Order) commerce.Order {
	t.Helper()
	e.PG.SetFault(pgsim.FaultError)
	o = pay(t, e, o, "tok_ok")
	require.Equal(t, commerce.StatusPaying, o.Status)
	e.Clock.Advance(commerce.DefaultOrderExpiry + commerce.DefaultPaymentWindow)
	_, err := e.Inventory.Sweep(ctx)
	require.NoError(t, err)
	_, err = e.Ledger.Sweep(ctx)
	require.NoError(t, err)
	e.PG.SetFault(pgsim.FaultNone)
	return o
}

// overturn has the PG reverse an approved payment and say so in a webhook: the payment
// moves to REVIEW.
func overturn(t *testing.T, e *commercetest.Env, paymentID string) {
	t.Helper()
	require.NoError(t, e.PG.Overturn(paymentID))
	body, sig, err := e.PG.Webhook(paymentID)
	require.NoError(t, err)
	require.NoError(t, e.Service.HandlePaymentWebhook(ctx, body, sig))
	require.Equal(t, payment.StateReview, paymentOf(t, e, paymentID).State)
}

// requireStock checks a SKU's available, reserved and sold counts.
func requireStock(t *testing.T, e *commercetest.Env, sku string, available, reserved, sold int64) {
	t.Helper()
	st := stock(t, e, sku)
	assert.Equal(t, [3]int64{available, reserved, sold}, [3]int64{st.Available, st.Reserved, st.Sold},
		"available, reserved, sold of %s", sku)
}
