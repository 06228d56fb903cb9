package cart_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/commerce/commercetest"
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
