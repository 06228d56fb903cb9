package cart_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/commerce/commercetest"
)

// countingCommerce is the real commerce service, counting the orders the cart reads back
// by key.
type countingCommerce struct {
	*commerce.Service
	byKey atomic.Int64
}

func (c *countingCommerce) OrderByKey(ctx context.Context, userID, key string) (commerce.Order, error) {
	c.byKey.Add(1)
	return c.Service.OrderByKey(ctx, userID, key)
}

// TestCheckoutReadsNoOrderItPlaced: a checkout that places its order (with or without
// points) answers with the order PlaceOrder returned, once its record shows the order key
// is its own: it does not read the order back. A retry, which placed nothing, reads it.
func TestCheckoutReadsNoOrderItPlaced(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, _ *cart.Service) {
		com := &countingCommerce{Service: e.Service}
		c := newCart(t, e, com)
		p := e.Product(t, 1000, 10)
		e.GivePoints(t, "alice", 5000)
		for i, points := range []bool{false, true} {
			key := []string{"co-card", "co-points"}[i]
			add(t, c, "alice", p, 1)
			com.byKey.Store(0)
			req := cart.CheckoutRequest{UserID: "alice", IdempotencyKey: key}
			if points {
				req.PayWithPoints, req.Points = true, 1000
			}
			o, err := c.Checkout(ctx, req)
			require.NoError(t, err)
			assert.Zero(t, com.byKey.Load(), "placed with points: %t", points)
			want := map[bool]commerce.Status{false: commerce.StatusPendingPayment, true: commerce.StatusPaid}[points]
			assert.Equal(t, want, o.Status)
			again, err := c.Checkout(ctx, req)
			require.NoError(t, err)
			assert.Equal(t, o, again, "the retry answers the same order")
			assert.EqualValues(t, 1, com.byKey.Load(), "the retry reads it")
		}
		e.RequireClean(t)
	})
}
