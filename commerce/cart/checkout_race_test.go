package cart_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/commerce/commercetest"
)

// TestConcurrentCheckoutManyKeys: checkouts of one cart sent at once with different keys
// (two tabs, or a client that lost its key) place ONE order: the others find the cart
// emptied or changed, and nothing else is reserved or held.
func TestConcurrentCheckoutManyKeys(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, c *cart.Service) {
		p := e.Product(t, 1000, 100)
		e.GivePoints(t, "alice", 10_000)
		add(t, c, "alice", p, 3)
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				_, errs[i] = c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: fmt.Sprintf("tab-%d", i), Points: 100})
			})
		}
		close(start)
		wg.Wait()
		placed := 0
		for i, err := range errs {
			if err == nil {
				placed++
				continue
			}
			assert.True(t, errorsIsAny(err, cart.ErrEmpty, cart.ErrChanged), "checkout %d: %v", i, err)
		}
		assert.Equal(t, 1, placed, "orders placed from one cart")
		page, err := e.Service.ListOrders(ctx, "alice", commerce.OrderQuery{})
		require.NoError(t, err)
		assert.Len(t, page.Orders, 1)
		st, err := e.Inventory.Stock(ctx, p)
		require.NoError(t, err)
		assert.Equal(t, [2]int64{97, 3}, [2]int64{st.Available, st.Reserved}, "reserved once")
		assert.Empty(t, lines(t, c, "alice"))
		e.RequireClean(t)
	})
}

func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// TestCheckoutKeyValidated: a checkout or AddOnce key commerce would refuse (control
// characters, NUL among them, which bun's MySQL dialect drops; bytes that are not UTF-8,
// stored as U+FFFD; a trailing space, which MySQL's collations ignore: "k " found the
// order checked out under "k", and AddOnce skipped an addition under another key) is a
// *ValidationError that changes nothing, on every backend.
func TestCheckoutKeyValidated(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, c *cart.Service) {
		p := e.Product(t, 1000, 10)
		add(t, c, "alice", p, 1)
		for _, key := range []string{"k\x00", "k\ty", "k\n", "\x7f", "k ", "k-\xff"} {
			_, err := c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: key})
			assert.ErrorIs(t, err, cart.ErrInvalidRequest, "%q", key)
			_, err = c.AddOnce(ctx, "alice", p, 1, key)
			assert.ErrorIs(t, err, cart.ErrInvalidRequest, "AddOnce %q", key)
		}
		assert.Equal(t, map[string]int64{p: 1}, lines(t, c, "alice"), "nothing changed")
		page, err := e.Service.ListOrders(ctx, "alice", commerce.OrderQuery{})
		require.NoError(t, err)
		assert.Empty(t, page.Orders)
	})
}

// addingInTx is a Commerce whose order transaction sees another request change the cart
// after the transaction began (with its coupon and points held) and before the cart's step
// runs: the worst moment for a concurrent Add.
type addingInTx struct {
	cart.Commerce
	change func()
}

func (c addingInTx) PlaceOrder(ctx context.Context, req commerce.PlaceOrderRequest) (commerce.Order, error) {
	step := req.InTx
	req.InTx = func(ctx context.Context, tx bun.IDB) error {
		c.change()
		return step(ctx, tx)
	}
	return c.Commerce.PlaceOrder(ctx, req)
}

// TestAddDuringCheckoutNotLost: units added while a checkout's order transaction runs
// are either in the order or still in the cart (the checkout fails with ErrChanged),
// never silently deleted with the cart. MySQL only: SQLite's single writer serialises
// the two.
func TestAddDuringCheckoutNotLost(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, plain *cart.Service) {
		if e.Name == "SQLite" {
			return
		}
		p1, p2 := e.Product(t, 1000, 10), e.Product(t, 1000, 10)
		tpl := e.CouponTemplate(t, 500)
		e.GivePoints(t, "alice", 1000)
		_, err := plain.Add(ctx, "alice", p1, 1)
		require.NoError(t, err)
		c := newCart(t, e, addingInTx{Commerce: e.Service, change: func() {
			_, err := plain.Add(ctx, "alice", p2, 2)
			require.NoError(t, err)
		}})
		o, err := c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1",
			CouponID: e.GiveCoupon(t, tpl, "alice"), Points: 100})
		ordered := map[string]int64{}
		if err == nil {
			for _, l := range o.Lines {
				ordered[l.ProductID] = l.Qty
			}
		} else {
			require.ErrorIs(t, err, cart.ErrChanged)
		}
		left := lines(t, plain, "alice")
		assert.Equal(t, int64(2), ordered[p2]+left[p2], "the 2 units added are ordered or kept: ordered %v, left %v", ordered, left)
	})
}
