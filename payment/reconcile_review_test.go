package payment_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// TestReconcilerGoesOnPastAContradiction: a pass that finds the PG contradicting a payment
// (another amount at the PG) moves it to REVIEW, which is no storage error: the pass goes on
// and settles everything else it examines, the payments after it and the pending refunds
// included, and returns no error.
func TestReconcilerGoesOnPastAContradiction(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)

		// "a-odd" is recorded for 5,000 won, but the PG holds a charge of 7,000 under its ID.
		odd := card("a-odd", 5000)
		e.record(t, odd)
		charged := payment.ApproveRequest(odd)
		charged.Amount = 7000
		_, err := e.sim.Approve(ctx, charged)
		require.NoError(t, err)
		// "b-lost": approved at the PG, its answer lost.
		e.unknown(t, card("b-lost", 5000))
		// "c-paid": its refund's answer lost, the refund PENDING.
		_, err = e.svc.Pay(ctx, card("c-paid", 5000))
		require.NoError(t, err)
		e.sim.InjectFault("r-c", pgsim.FaultLostResponse, 1)
		_, err = e.svc.Refund(ctx, refund("r-c", "c-paid", 2000))
		require.ErrorIs(t, err, payment.ErrOutcomeUnknown)

		rec := testkit.Must(payment.NewReconciler(e.svc, payment.WithThreshold(0), payment.WithBatchSize(1),
			payment.WithConcurrency(1)))(t)
		report, err := rec.Reconcile(ctx)
		assert.NoError(t, err, "a contradiction is reported, not a failed pass")
		assert.Equal(t, payment.ReconcileReport{Examined: 3, Settled: 3}, report)

		assert.Equal(t, payment.StateReview, e.get(t, "a-odd").State)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>REVIEW:reconciler"}, e.history(t, "a-odd"))
		assert.Equal(t, payment.StateApproved, e.get(t, "b-lost").State)
		assert.Equal(t, []string{"r-c:SUCCEEDED:2000"}, e.refunds(t, "c-paid"))
		c := e.get(t, "c-paid")
		assert.Equal(t, payment.StatePartiallyRefunded, c.State)
		assert.Equal(t, int64(2000), c.Refunded)
		assert.Zero(t, c.RefundPending)
	})
}
