package cart_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/internal/testkit"
)

// TestRetryAfterChangedCartChangedBack: a checkout fails with ErrChanged (a line was added
// while it ran); the user removes that line again, so the cart holds what the first
// attempt read, and retries with the same key. ErrChanged promises that nothing was placed
// and that a retry orders the cart as it is now: the retry must place the order, not meet
// the first attempt's abandoned stock reservation (with the Redis inventory, a voided hold
// that refuses the key for ever).
func TestRetryAfterChangedCartChangedBack(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, plain *cart.Service) {
		p1, p2 := e.Product(t, 1000, 10), e.Product(t, 1000, 10)
		_, err := plain.Add(ctx, "alice", p1, 1)
		require.NoError(t, err)
		c := newCart(t, e, changing{Commerce: e.Service, change: func() {
			_, err := plain.Add(ctx, "alice", p2, 1)
			require.NoError(t, err)
		}})
		_, err = c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1"})
		require.ErrorIs(t, err, cart.ErrChanged)
		_, err = plain.Remove(ctx, "alice", p2)
		require.NoError(t, err)
		require.Equal(t, map[string]int64{p1: 1}, lines(t, plain, "alice"), "the cart as the first attempt read it")

		o, err := plain.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1"})
		require.NoError(t, err, "the retry orders the cart as it is now")
		assert.Equal(t, commerce.StatusPendingPayment, o.Status)
		assert.Equal(t, []commerce.OrderLine{{ProductID: p1, Qty: 1, UnitPrice: 1000, Amount: 1000}}, o.Lines)
		assert.Empty(t, lines(t, plain, "alice"), "the cart is emptied of what was ordered")
		again, err := plain.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1"})
		require.NoError(t, err)
		assert.Equal(t, o.ID, again.ID, "a further retry returns the same order")
		st, err := e.Inventory.Stock(ctx, p1)
		require.NoError(t, err)
		assert.Equal(t, int64(1), st.Reserved, "the order's unit, reserved once")
		e.RequireClean(t)
	})
}

// TestSchemaAddsVersionToAnOlderCartTable: CreateSchema adds the version column to a
// commerce_carts made by an earlier version, whose carts (version 0) then change and check
// out as any other.
func TestSchemaAddsVersionToAnOlderCartTable(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, c *cart.Service) {
		p1, p2 := e.Product(t, 1000, 10), e.Product(t, 1000, 10)
		_, err := c.Add(ctx, "alice", p1, 1)
		require.NoError(t, err)
		_, err = e.DB.ExecContext(ctx, "ALTER TABLE commerce_carts DROP COLUMN version")
		require.NoError(t, err)
		require.NoError(t, cart.CreateSchema(ctx, e.DB))
		require.NoError(t, cart.CreateSchema(ctx, e.DB), "idempotent")
		_, err = c.Add(ctx, "alice", p2, 2)
		require.NoError(t, err)
		o, err := c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1"})
		require.NoError(t, err)
		assert.Len(t, o.Lines, 2)
		assert.Empty(t, lines(t, c, "alice"))
		e.RequireClean(t)
	})
}

// TestAddsRacingCheckouts: additions and checkouts of one cart race, each checkout
// retried under its key while it fails with ErrChanged. Every unit whose addition
// succeeded is, at the end, in exactly one placed order or still in the cart, and the
// stock reserved is what the orders hold.
func TestAddsRacingCheckouts(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, c *cart.Service) {
		products := []string{e.Product(t, 1000, 1000), e.Product(t, 700, 1000), e.Product(t, 300, 1000)}
		const adds, checkouts = 25, 5 // within the unpaid limits of the test configurations (20 units of a product)
		var (
			mu      sync.Mutex
			added   = map[string]int64{}
			ordered = map[string]int64{}
			orders  []commerce.Order
		)
		testkit.Parallel(adds+checkouts, 6, func(i int) {
			if i%6 == 5 && i/6 < checkouts {
				// A client retries a checkout that failed with ErrChanged under its key, as told.
				req := cart.CheckoutRequest{UserID: "alice", IdempotencyKey: fmt.Sprintf("co-%d", i)}
				o, err := c.Checkout(ctx, req)
				for try := 0; errors.Is(err, cart.ErrChanged) && try < 50; try++ {
					o, err = c.Checkout(ctx, req)
				}
				if err != nil {
					assert.ErrorIs(t, err, cart.ErrEmpty, "checkout %d", i)
					return
				}
				mu.Lock()
				orders = append(orders, o)
				for _, l := range o.Lines {
					ordered[l.ProductID] += l.Qty
				}
				mu.Unlock()
				return
			}
			p := products[i%len(products)]
			qty := int64(1 + i%2)
			_, err := c.AddOnce(ctx, "alice", p, qty, fmt.Sprintf("add-%d", i))
			if assert.NoError(t, err) {
				mu.Lock()
				added[p] += qty
				mu.Unlock()
			}
		})
		left := lines(t, c, "alice")
		t.Logf("%d orders placed, %v left in the cart", len(orders), left)
		for _, p := range products {
			assert.Equal(t, added[p], ordered[p]+left[p], "units of %s added = ordered + left in the cart", p)
			st, err := e.Inventory.Stock(ctx, p)
			require.NoError(t, err)
			assert.Equal(t, ordered[p], st.Reserved, "reserved units of %s = ordered", p)
		}
		page, err := e.Service.ListOrders(ctx, "alice", commerce.OrderQuery{Limit: 100})
		require.NoError(t, err)
		assert.Len(t, page.Orders, len(orders), "one order per successful checkout")
		e.RequireClean(t)
	})
}

// TestRefusalOfAStaleCartIsErrChanged: the user changes the cart while its checkout runs,
// and commerce refuses the order of the lines the checkout read (more units than the
// unpaid limits allow, or than the stock holds) before the cart's own check in the order's
// transaction could see the change. The cart changed between being read and being
// ordered: the checkout must fail with ErrChanged (which refserver does not keep for the
// key), not with a refusal of lines the cart no longer holds, and the retry under the key
// orders the cart as it is now.
func TestRefusalOfAStaleCartIsErrChanged(t *testing.T) {
	for _, c := range []struct {
		name             string
		stock, read, now int64
	}{
		{"unpaid limit", 100, commerce.DefaultMaxUnpaidPerProduct + 5, 5},
		{"out of stock", 5, 10, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			each(t, func(t *testing.T, e *commercetest.Env, plain *cart.Service) {
				p := e.Product(t, 1000, c.stock)
				_, err := plain.Add(ctx, "alice", p, c.read)
				require.NoError(t, err)
				co := newCart(t, e, changing{Commerce: e.Service, change: func() {
					_, err := plain.SetQty(ctx, "alice", p, c.now)
					require.NoError(t, err)
				}})
				_, err = co.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1"})
				require.ErrorIs(t, err, cart.ErrChanged)
				assert.Equal(t, map[string]int64{p: c.now}, lines(t, plain, "alice"), "the cart is kept")

				o, err := plain.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1"})
				require.NoError(t, err, "the retry orders the cart as it is now")
				assert.Equal(t, []commerce.OrderLine{{ProductID: p, Qty: c.now, UnitPrice: 1000, Amount: 1000 * c.now}}, o.Lines)
				assert.Empty(t, lines(t, plain, "alice"))
				e.RequireClean(t)
			})
		})
	}
}
