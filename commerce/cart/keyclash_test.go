package cart_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/internal/testkit"
)

// derivedOrderKey is the order key a checkout with key, no coupon and points derives for
// a cart of version holding lines (product, qty pairs in the order they were added), as a
// user can compute it: the checkout's key, what is ordered and the version they know.
func derivedOrderKey(key string, points, version int64, lines ...any) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00\x00%d\x00", key, points)
	for i := 0; i < len(lines); i += 2 {
		fmt.Fprintf(h, "%s\x00%d\x00", lines[i], lines[i+1])
	}
	fmt.Fprintf(h, "v%d\x00", version)
	return "cart-" + hex.EncodeToString(h.Sum(nil))[:40]
}

// TestCheckoutKeyTakenByADirectOrder: a user places a direct order under the idempotency
// key their next checkout will derive for its order (the checkout's key, the lines and the
// cart's version: all known to them), with the cart's lines, and then checks the cart out.
// The checkout must not pass that direct order off as the cart's: it answered it as placed
// from the cart while the cart kept its lines (either the order is placed and the cart is
// empty, or neither happened) and no checkout was recorded. It is refused as a key
// conflict, the cart unchanged; a checkout with another key orders the cart.
func TestCheckoutKeyTakenByADirectOrder(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, c *cart.Service) {
		p1 := e.Product(t, 1000, 10)
		add(t, c, "alice", p1, 2) // the cart's version is 1
		direct, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: "alice",
			IdempotencyKey: derivedOrderKey("co-1", 0, 1, p1, 2), Lines: []commerce.Line{{ProductID: p1, Qty: 2}}})
		require.NoError(t, err)

		_, err = c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1"})
		require.ErrorIs(t, err, commerce.ErrIdempotencyConflict, "the direct order is not the checkout's")
		assert.Equal(t, map[string]int64{p1: 2}, lines(t, c, "alice"), "the cart keeps its lines")

		o, err := c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-2"})
		require.NoError(t, err)
		assert.NotEqual(t, direct.ID, o.ID)
		assert.Empty(t, lines(t, c, "alice"), "the cart is emptied with its order")
		page, err := e.Service.ListOrders(ctx, "alice", commerce.OrderQuery{})
		require.NoError(t, err)
		assert.Len(t, page.Orders, 2)
		st, err := e.Inventory.Stock(ctx, p1)
		require.NoError(t, err)
		assert.Equal(t, int64(4), st.Reserved, "each order holds its units")
		e.RequireClean(t)
	})
}

// TestCheckoutWithPointsKeyTakenByADirectOrder: as TestCheckoutKeyTakenByADirectOrder, for
// a checkout that pays with points alone, the direct order under its derived key placed
// with the same points and left unpaid. The checkout is refused as a key conflict and
// must change nothing: it must not pay that direct order with the user's points first.
func TestCheckoutWithPointsKeyTakenByADirectOrder(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, c *cart.Service) {
		p1 := e.Product(t, 1000, 10)
		e.GivePoints(t, "alice", 5000)
		add(t, c, "alice", p1, 2) // the cart's version is 1
		direct := placeDirect(t, e, p1, 2000)
		require.Equal(t, commerce.StatusPendingPayment, direct.Status)
		checkoutKeyTaken(t, e, c, p1, &direct, 2000)
	})
}

// placeThen is a cart's commerce that runs then once, before its first PlaceOrder: just
// before a checkout places its order, after whatever it looked up before.
type placeThen struct {
	cart.Commerce
	then func()
	done bool
}

func (p *placeThen) PlaceOrder(ctx context.Context, req commerce.PlaceOrderRequest) (commerce.Order, error) {
	if !p.done {
		p.done = true
		p.then()
	}
	return p.Commerce.PlaceOrder(ctx, req)
}

// TestCheckoutWithPointsKeyTakenByARacingDirectOrder: as
// TestCheckoutWithPointsKeyTakenByADirectOrder, the direct order placed while the checkout
// runs, just before it places its own (after it looked for one under its key). The checkout
// is refused as a key conflict and must pay nothing it did not place: the direct order
// stays unpaid, its points held.
func TestCheckoutWithPointsKeyTakenByARacingDirectOrder(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, _ *cart.Service) {
		p1 := e.Product(t, 1000, 10)
		e.GivePoints(t, "alice", 5000)
		var direct commerce.Order
		c := newCart(t, e, &placeThen{Commerce: e.Service, then: func() { direct = placeDirect(t, e, p1, 2000) }})
		add(t, c, "alice", p1, 2) // the cart's version is 1
		checkoutKeyTaken(t, e, c, p1, &direct, 2000)
	})
}

// failedAttemptThen is a cart's commerce whose first PlaceOrder runs the cart's InTx to its
// end in a transaction that then fails (its connection reset after InTx), runs then, and
// places again as PlaceOrder's own recovery does after a failed transaction (it looks for
// an order committed under the key meanwhile): InTx ran, yet the order the placement
// answers is not one its transaction placed.
type failedAttemptThen struct {
	cart.Commerce
	then func()
	done bool
}

func (p *failedAttemptThen) PlaceOrder(ctx context.Context, req commerce.PlaceOrderRequest) (commerce.Order, error) {
	if p.done {
		return p.Commerce.PlaceOrder(ctx, req)
	}
	p.done = true
	failing, inTx := req, req.InTx
	failing.InTx = func(ctx context.Context, tx bun.IDB) error {
		if err := inTx(ctx, tx); err != nil {
			return err
		}
		return testkit.ErrConnReset
	}
	if _, err := p.Commerce.PlaceOrder(ctx, failing); !errors.Is(err, testkit.ErrConnReset) {
		return commerce.Order{}, fmt.Errorf("the failing attempt answered %v", err)
	}
	p.then()
	return p.Commerce.PlaceOrder(ctx, req)
}

// TestCheckoutKeyTakenAfterAFailedAttempt: a checkout's placing transaction records the
// checkout and empties the cart (InTx), then fails; before the placement looks again, the
// user places a direct order under the order key the checkout derived (with the cart's
// lines, and points). The checkout must not take that order for the cart's because its
// InTx once ran: it is refused as a key conflict, the cart keeps its lines, and the direct
// order is not paid with the user's points.
func TestCheckoutKeyTakenAfterAFailedAttempt(t *testing.T) {
	for _, points := range []int64{0, 2000} {
		t.Run(fmt.Sprintf("points=%d", points), func(t *testing.T) {
			each(t, func(t *testing.T, e *commercetest.Env, _ *cart.Service) {
				p1 := e.Product(t, 1000, 10)
				e.GivePoints(t, "alice", 5000)
				var direct commerce.Order
				c := newCart(t, e, &failedAttemptThen{Commerce: e.Service, then: func() { direct = placeDirect(t, e, p1, points) }})
				add(t, c, "alice", p1, 2) // the cart's version is 1
				checkoutKeyTaken(t, e, c, p1, &direct, points)
			})
		})
	}
}

// placeDirect places alice's direct order of 2 × p1, with points, under the order key a
// checkout "co-1" of her cart (2 × p1, version 1) with those points derives.
func placeDirect(t *testing.T, e *commercetest.Env, p1 string, points int64) commerce.Order {
	o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: "alice", IdempotencyKey: derivedOrderKey("co-1", points, 1, p1, 2),
		Lines: []commerce.Line{{ProductID: p1, Qty: 2}}, Points: points})
	require.NoError(t, err)
	return o
}

// checkoutKeyTaken checks alice's cart (2 × p1) out with key "co-1" and points (paying
// with them alone when there are any, of the 5,000 she was given), and requires that it is
// refused as a key conflict and changes nothing: the cart keeps its lines, and the direct
// order under its derived key (*direct, read once the checkout ends: it may be placed while
// it runs) stays unpaid, its points held, not spent.
func checkoutKeyTaken(t *testing.T, e *commercetest.Env, c *cart.Service, p1 string, direct *commerce.Order, points int64) {
	t.Helper()
	_, err := c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1", Points: points, PayWithPoints: points > 0})
	require.ErrorIs(t, err, commerce.ErrIdempotencyConflict, "the direct order is not the checkout's")
	assert.Equal(t, map[string]int64{p1: 2}, lines(t, c, "alice"), "the cart keeps its lines")
	got, err := e.Service.GetOrder(ctx, direct.ID, commerce.Actor{UserID: "alice"})
	require.NoError(t, err)
	assert.Equal(t, commerce.StatusPendingPayment, got.Status, "the refused checkout paid nothing")
	b, err := e.Service.Points(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, [2]int64{5000 - points, points}, [2]int64{b.Available, b.Held}, "the direct order's points are held, not spent")
	e.RequireClean(t)
}
