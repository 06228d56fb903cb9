package commerce_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// Run's loops finish what requests left: an unknown payment is settled by the reconciler
// and the order completed by recovery, a due order expires, events are relayed; and Run
// stops when its context ends.
func TestRun(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 0, 0)
		unknown := place(t, e, b, sku, 1, 0)
		e.PG.InjectFault("pay-"+unknown.ID, pgsim.FaultLostResponse, 1)
		require.Equal(t, commerce.StatusPaying, pay(t, e, unknown, "tok_ok").Status)
		due := place(t, e, b, sku, 2, 0)
		e.Clock.Advance(commerce.DefaultOrderExpiry)

		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- e.Service.Run(runCtx) }()
		require.Eventually(t, func() bool {
			return order(t, e, unknown.ID).Status == commerce.StatusPaid && order(t, e, due.ID).Status == commerce.StatusExpired
		}, 30*time.Second, 20*time.Millisecond)
		require.Eventually(t, func() bool {
			lag, err := e.Relay.Lag(ctx)
			return err == nil && lag == 0
		}, 30*time.Second, 20*time.Millisecond)
		stop()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not stop")
		}
		requireStock(t, e, sku, 9, 0, 1)
		e.RequireClean(t)
		e.RequireDelivered(t)
	}, commerce.WithRecovery(0, 10*time.Millisecond), commerce.WithSweepInterval(10*time.Millisecond))
}

// The approval arrives but the points hold is gone (here: voided behind the order's back):
// the order cannot be completed, so the payment is refunded and the order failed. With the
// inventory outside SQL the units were already sold when that was found out: they are
// returned (inventory.Return), so in both the units end up available and not sold.
func TestApprovedButHoldGone(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		b := newBuyer(t, e, 1_000, 0)
		o := place(t, e, b, sku, 2, 1_000)
		_, err := e.Ledger.Void(ctx, "hold-"+o.ID)
		require.NoError(t, err)

		got := pay(t, e, o, "tok_ok")
		assert.Equal(t, commerce.StatusPaymentFailed, got.Status)
		assert.Equal(t, commerce.FailureUnfulfillable, got.FailureCode)
		assert.Equal(t, ledger.Balance{Available: 1_000, Total: 1_000}, balance(t, e, b.user))
		requireStock(t, e, sku, 5, 0, 0)
		assert.Equal(t, int64(19_000), e.PG.Stats().CanceledAmount)
		e.RequireClean(t)
	})
}
