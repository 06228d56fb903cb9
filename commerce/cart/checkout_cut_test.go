package cart_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
)

// TestCheckoutPayWithPointsCut: a checkout paid with points alone (the order placed with
// the checkout's record and the cart emptied in its transaction, then paid by
// commerce.Service.FinishPointsPayment), its database connection cut at each of its
// statements in turn, before the statement reaches the server and after its answer (it
// ran, a COMMIT committed, the answer is lost). It fails as a dependency failure, or not
// at all, answering the order as stored; then the client's checkout again with its key
// (after the payment reconciler and commerce's Recover, or alone) finds the order PAID,
// once: one order of the buyer, its cart empty, the points captured exactly once, the unit
// sold once, and the audit clean.
func TestCheckoutPayWithPointsCut(t *testing.T) {
	e, link := commercetest.MySQLLinked(t)
	c := newCart(t, e, e.Service)
	p := e.Product(t, 3000, 1000)
	sold := int64(0)

	checkout := func(t *testing.T, user string, arm func()) ([]string, []string, error) {
		e.GivePoints(t, user, 10_000)
		add(t, c, user, p, 1)
		arm()
		o, err := c.Checkout(ctx, cart.CheckoutRequest{UserID: user, IdempotencyKey: "co", Points: 3000, PayWithPoints: true})
		cut, seen := link.Disarm()
		if err == nil {
			assert.Equal(t, testkit.Must(e.Service.GetOrder(ctx, o.ID, commerce.Actor{Admin: true}))(t), o, "answered as it is")
		}
		return cut, seen, err
	}
	recover := func(t *testing.T, user string, settle bool) {
		if settle {
			e.Settle(t)
		}
		req := cart.CheckoutRequest{UserID: user, IdempotencyKey: "co", Points: 3000, PayWithPoints: true}
		o, err := c.Checkout(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusPaid, o.Status)
		assert.Equal(t, testkit.Must(e.Service.GetOrder(ctx, o.ID, commerce.Actor{Admin: true}))(t), o)
		again, err := c.Checkout(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, o, again)
		page, err := e.Service.ListOrders(ctx, user, commerce.OrderQuery{})
		require.NoError(t, err)
		assert.Len(t, page.Orders, 1, "one order placed")
		assert.Empty(t, lines(t, c, user))
		assert.Equal(t, ledger.Balance{Available: 7000, Total: 7000}, testkit.Must(e.Service.Points(ctx, user))(t))
		sold++
		st := testkit.Must(e.Inventory.Stock(ctx, p))(t)
		assert.Equal(t, [3]int64{1000 - sold, 0, sold}, [3]int64{st.Available, st.Reserved, st.Sold})
		e.RequireClean(t)
	}

	_, seen, err := checkout(t, "clean", func() { link.Arm(nil, false) })
	require.NoError(t, err)
	recover(t, "clean", false)
	t.Logf("%d statements: %q", len(seen), seen)
	require.Contains(t, seen, "COMMIT")
	for _, settle := range []bool{false, true} {
		for _, p := range testenv.CutPoints(seen, nil) {
			after, n := p.After, p.N
			user := fmt.Sprintf("u-%t-%t-%d", settle, after, n)
			t.Run(user, func(t *testing.T) {
				cut, _, err := checkout(t, user, func() { link.Arm(p.Match(), after) })
				require.Len(t, cut, 1)
				if err != nil {
					require.True(t, depfail.Is(err), "cut at %q: %v", cut[0], err)
				}
				recover(t, user, settle)
			})
		}
	}
}
