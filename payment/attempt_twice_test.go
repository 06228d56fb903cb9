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

// TestAttemptLosesToAnotherAttemptInFlight: two Attempts of one recorded payment (a client
// submitting twice); the first one's call is on the way to the PG when the second one's
// call is refused. Of an abandonment and a submission exactly one happens: the second
// Attempt does not abandon the payment the first one sent (ErrGatewayUnavailable, still
// REQUESTED), and the first one's charge stands, with nothing given back.
func TestAttemptLosesToAnotherAttemptInFlight(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		g := newHeld("approve:twice")
		e := newEnv(t, db, g.wrap)
		req := card("twice", 5000)
		e.record(t, req)

		done := make(chan struct{})
		var (
			first    payment.Payment
			firstErr error
		)
		go func() { defer close(done); first, firstErr = e.svc.Attempt(ctx, req) }()
		<-g.entered // the first Attempt's call is on the way to the PG

		e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1) // the second one's call is refused
		p, err := e.svc.Attempt(ctx, req)
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		assert.NotErrorIs(t, err, payment.ErrAbandoned, "sent by the first Attempt: not the second's to abandon")
		assert.Equal(t, payment.StateRequested, p.State)

		close(g.release)
		<-done
		require.NoError(t, firstErr)
		assert.Equal(t, payment.StateApproved, first.State)
		p = e.get(t, req.PaymentID)
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}, e.history(t, req.PaymentID))
		assert.Empty(t, e.refunds(t, req.PaymentID), "nothing given back")
		assert.Equal(t, 1, e.sim.Charges(req.PaymentID))
	})
}
