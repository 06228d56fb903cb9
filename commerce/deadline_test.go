package commerce_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/coupon"
)

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
