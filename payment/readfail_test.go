package payment_test

import (
	"context"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
)

// TestRefundRefusalReadFails: a refund whose reservation matches nothing reads whether its
// refund ID was recorded meanwhile (a retry of the same refund racing it: then the answer
// is that refund) before it says why the payment refuses it. When that read fails, the
// refund fails as the database being unavailable, not with a refusal given without
// knowing: the payment, refunded in full, changes nothing, and no refund is recorded.
func TestRefundRefusalReadFails(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		f := &testkit.FailStatement{}
		e := newEnv(t, db.WithQueryHook(f), nil)
		_, err := e.svc.Pay(ctx, card("pay-1", 10_000))
		require.NoError(t, err)
		_, err = e.svc.Refund(ctx, refund("r-1", "pay-1", 10_000))
		require.NoError(t, err)

		// The refund's reads: before the reservation, then after it matched nothing.
		f.Arm(2, "SELECT", "payment_refunds")
		_, err = e.svc.Refund(ctx, refund("r-2", "pay-1", 10_000))
		require.NotEmpty(t, f.Disarm(), "the refund was read twice")
		testkit.RequireConnReset(t, err, payment.ErrNotRefundable)

		p := e.get(t, "pay-1")
		assert.Equal(t, payment.StateRefunded, p.State)
		assert.Equal(t, int64(10_000), p.Refunded)
		assert.Zero(t, p.RefundPending)
		_, err = e.svc.GetRefund(ctx, "r-2")
		require.ErrorIs(t, err, payment.ErrRefundNotFound)
		assert.Equal(t, 1, e.sim.Stats().CancelCalls)

		_, err = e.svc.Refund(ctx, refund("r-2", "pay-1", 10_000))
		require.ErrorIs(t, err, payment.ErrNotRefundable, "read, the refusal")
	})
}

// TestSweepListingsFail: CrossCheck and the Reconciler, whose listing of the payments (or
// refunds) to visit fails, fail as the database being unavailable.
func TestSweepListingsFail(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		f := &testkit.FailStatement{}
		e := newEnv(t, db.WithQueryHook(f), nil)
		_, err := e.svc.Pay(ctx, card("pay-1", 10_000))
		require.NoError(t, err)
		rec := testkit.Must(payment.NewReconciler(e.svc, payment.WithThreshold(0)))(t)
		for _, c := range []struct {
			name, match string
			call        func() error
		}{
			{"CrossCheck", "payment_payments", func() error { _, err := e.svc.CrossCheck(ctx); return err }},
			{"Reconcile payments", "payment_payments", func() error { _, err := rec.Reconcile(ctx); return err }},
			{"Reconcile refunds", "payment_refunds", func() error { _, err := rec.Reconcile(ctx); return err }},
		} {
			f.Arm(1, "SELECT", c.match)
			err := c.call()
			require.NotEmpty(t, f.Disarm(), c.name)
			require.ErrorIs(t, err, errcode.ErrUnavailable, c.name)
			require.ErrorIs(t, err, syscall.ECONNRESET, c.name)
		}
	})
}
