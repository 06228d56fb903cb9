package payment_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// TestAttemptLosesToThePayThatRecordedIt: Pay records a payment and sends it; while its
// call is on the way to the PG, an Attempt of the same request (a client's retry through
// the other path) has its own call refused. Of an abandonment and another submission
// exactly one happens (Attempt's doc: it loses to any submitter, Pay included, that took
// the payment up): the payment is Pay's, the Attempt answers ErrGatewayUnavailable without
// abandoning it, and Pay's charge stands, with nothing given back.
func TestAttemptLosesToThePayThatRecordedIt(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		g := newHeld("approve:race-pay")
		e := newEnv(t, db, g.wrap)
		req := card("race-pay", 5000)

		done := make(chan struct{})
		var (
			paid   payment.Payment
			payErr error
		)
		go func() { defer close(done); paid, payErr = e.svc.Pay(ctx, req) }()
		<-g.entered // Pay recorded the payment; its call is on the way to the PG

		e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1) // the attempt's call is refused
		p, err := e.svc.Attempt(ctx, req)
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		assert.NotErrorIs(t, err, payment.ErrAbandoned, "sent by Pay: not the attempt's to abandon")
		assert.Equal(t, payment.StateRequested, p.State)

		close(g.release)
		<-done
		require.NoError(t, payErr)
		assert.Equal(t, payment.StateApproved, paid.State)
		p = e.get(t, req.PaymentID)
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Zero(t, p.RefundPending)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}, e.history(t, req.PaymentID))
		assert.Empty(t, e.refunds(t, req.PaymentID), "nothing given back")
		voided, err := e.svc.Voided(ctx, p)
		require.NoError(t, err)
		assert.False(t, voided)
		assert.Equal(t, 1, e.sim.Charges(req.PaymentID))
	})
}
