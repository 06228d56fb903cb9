package commerce_test

import (
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/errcode"
)

// TestInTxFailureKeepsTheReservation: a PlaceOrderRequest.InTx that fails with a
// dependency failure (its connection lost, say) has not refused the order: the order
// fails like after any other failure, and a retry with the key places it, with the stock
// reserved once.
func TestInTxFailureKeepsTheReservation(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 1000, 10)
		req := commerce.PlaceOrderRequest{UserID: e.ID("user"), Lines: []commerce.Line{{ProductID: sku, Qty: 2}},
			IdempotencyKey: e.ID("key"), InTx: func(context.Context, bun.IDB) error {
				return errcode.Unavailable("database", io.ErrUnexpectedEOF)
			}}
		_, err := e.Service.PlaceOrder(ctx, req)
		require.ErrorIs(t, err, errcode.ErrUnavailable)
		req.InTx = func(context.Context, bun.IDB) error { return nil }
		o, err := e.Service.PlaceOrder(ctx, req)
		require.NoError(t, err, "the retry places the order")
		require.Equal(t, commerce.StatusPendingPayment, o.Status)
		requireStock(t, e, sku, 8, 2, 0)
		e.RequireClean(t)
	})
}
