package commerce_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/errcode"
)

// placeLines places an order of lines for user, returning the error.
func placeLines(e *commercetest.Env, user, key string, lines ...commerce.Line) (commerce.Order, error) {
	return e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: user, IdempotencyKey: key, Lines: lines})
}

// TestUnpaidLimits: a user's unpaid orders may hold at most 5 units of a product and 8 in
// all; an order beyond either cap is refused with *UnpaidLimitError and changes nothing,
// and units stop counting once their order is paid or cancelled.
func TestUnpaidLimits(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		a, b, c := e.Product(t, 1_000, 50), e.Product(t, 1_000, 50), e.Product(t, 1_000, 50)
		user := newBuyer(t, e, 0, 0).user
		refused := func(want commerce.UnpaidLimitError, lines ...commerce.Line) {
			t.Helper()
			before := [3]int64{stock(t, e, a).Available, stock(t, e, b).Available, stock(t, e, c).Available}
			_, err := placeLines(e, user, e.ID("key"), lines...)
			require.ErrorIs(t, err, commerce.ErrUnpaidLimit)
			var got *commerce.UnpaidLimitError
			require.ErrorAs(t, err, &got)
			want.UserID = user
			assert.Equal(t, want, *got)
			assert.Equal(t, "unpaid_limit_reached", errcode.ReasonOf(err))
			assert.Equal(t, before, [3]int64{stock(t, e, a).Available, stock(t, e, b).Available, stock(t, e, c).Available}, "nothing reserved")
		}
		first, err := placeLines(e, user, "k1", commerce.Line{ProductID: a, Qty: 4})
		require.NoError(t, err)
		refused(commerce.UnpaidLimitError{ProductID: a, Held: 4, Requested: 2, Limit: 5}, commerce.Line{ProductID: a, Qty: 2})
		// Lines of one product are summed before the cap is applied (issue 13's 50 + 48).
		refused(commerce.UnpaidLimitError{ProductID: a, Held: 4, Requested: 2, Limit: 5},
			commerce.Line{ProductID: a, Qty: 1}, commerce.Line{ProductID: a, Qty: 1})
		_, err = placeLines(e, user, "k2", commerce.Line{ProductID: a, Qty: 1})
		require.NoError(t, err)
		_, err = placeLines(e, user, "k3", commerce.Line{ProductID: b, Qty: 3})
		require.NoError(t, err)
		refused(commerce.UnpaidLimitError{Held: 8, Requested: 1, Limit: 8}, commerce.Line{ProductID: c, Qty: 1})
		_, err = placeLines(e, user, "k2", commerce.Line{ProductID: a, Qty: 1})
		require.NoError(t, err, "a replay is not a new order")

		// Someone else is not affected; paying or cancelling frees the units.
		_, err = placeLines(e, newBuyer(t, e, 0, 0).user, "k1", commerce.Line{ProductID: a, Qty: 5})
		require.NoError(t, err)
		pay(t, e, first, "tok_visa")
		_, err = placeLines(e, user, "k4", commerce.Line{ProductID: a, Qty: 3}, commerce.Line{ProductID: c, Qty: 1})
		require.NoError(t, err, "1 + 3 of a, 8 in all")
		requireStock(t, e, a, 50-4-1-5-3, 1+5+3, 4)
		e.RequireClean(t)
	}, commerce.WithUnpaidLimits(5, 8))
}

// TestUnpaidLimitsUnderConcurrency: one user places many orders at once; exactly as many
// fit as the cap allows, the others are refused, and the stock reserved is exactly theirs.
func TestUnpaidLimitsUnderConcurrency(t *testing.T) {
	for _, tc := range []struct {
		name              string
		perProduct, total int64
		products          int
		wantPlaced        int
	}{
		{"per product", 10, 0, 1, 3}, // 3 units each: 3 × 3 = 9 ≤ 10 < 12
		{"in total", 0, 10, 4, 3},    // across 4 products: the same
	} {
		t.Run(tc.name, func(t *testing.T) {
			each(t, func(t *testing.T, e *commercetest.Env) {
				skus := make([]string, tc.products)
				for i := range skus {
					skus[i] = e.Product(t, 1_000, 100)
				}
				user := newBuyer(t, e, 0, 0).user
				const attempts = 16
				var (
					wg              sync.WaitGroup
					mu              sync.Mutex
					placed, refused int
					others          []error
				)
				for i := range attempts {
					wg.Go(func() {
						_, err := placeLines(e, user, fmt.Sprintf("race-%d", i), commerce.Line{ProductID: skus[i%len(skus)], Qty: 3})
						mu.Lock()
						defer mu.Unlock()
						switch {
						case err == nil:
							placed++
						case errcode.ReasonOf(err) == "unpaid_limit_reached":
							refused++
						default:
							others = append(others, err)
						}
					})
				}
				wg.Wait()
				require.Empty(t, others)
				assert.Equal(t, tc.wantPlaced, placed)
				assert.Equal(t, attempts-tc.wantPlaced, refused)
				var reserved int64
				for _, sku := range skus {
					st := stock(t, e, sku)
					reserved += st.Reserved
					assert.Equal(t, int64(100), st.Available+st.Reserved, "%s: every refused order's units are back", sku)
				}
				assert.Equal(t, int64(3*tc.wantPlaced), reserved)
				page, err := e.Service.ListOrders(ctx, user, commerce.OrderQuery{Status: commerce.StatusPendingPayment})
				require.NoError(t, err)
				assert.Len(t, page.Orders, tc.wantPlaced)
				e.RequireClean(t)
			}, commerce.WithUnpaidLimits(tc.perProduct, tc.total))
		})
	}
}

// TestUnpaidLimitsCountNoOrderPastItsDeadline: an unpaid order past its deadline holds
// nothing any more (Pay refuses it, and the sweep expires it), so it counts against no cap
// even before the sweep has run: the user may order again at once.
func TestUnpaidLimitsCountNoOrderPastItsDeadline(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		a := e.Product(t, 1_000, 50)
		user := newBuyer(t, e, 0, 0).user
		old, err := placeLines(e, user, "k1", commerce.Line{ProductID: a, Qty: 5})
		require.NoError(t, err)
		_, err = placeLines(e, user, "k2", commerce.Line{ProductID: a, Qty: 1})
		require.ErrorIs(t, err, commerce.ErrUnpaidLimit, "the first order holds the cap")

		e.Clock.Advance(commerce.DefaultOrderExpiry)
		_, err = placeLines(e, user, "k3", commerce.Line{ProductID: a, Qty: 5})
		require.NoError(t, err, "the first order is past its deadline, not yet expired by the sweep")
		assert.Equal(t, commerce.StatusPendingPayment, order(t, e, old.ID).Status)
		_, err = placeLines(e, user, "k4", commerce.Line{ProductID: a, Qty: 1})
		require.ErrorIs(t, err, commerce.ErrUnpaidLimit, "the new order holds the cap")

		n, err := e.Service.Expire(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		assert.Equal(t, commerce.StatusExpired, order(t, e, old.ID).Status)
		e.RequireClean(t)
	}, commerce.WithUnpaidLimits(5, 0))
}
