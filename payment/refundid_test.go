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

// TestCallersRefundIDsNeverTakeTheServicesOwn: the Service names the refunds it makes itself
// after the payment ("void-<payment>" for the charge of an abandoned payment the PG approved
// all the same). A caller's refund, whose ID the caller chooses, never takes such a name:
// neither a refund of another payment named after an abandoned one, which would stop the
// Service from recording that payment's approval and giving its charge back, nor a refund of
// a payment named after itself, which would make Voided report an ordinary payment as one
// nothing may be fulfilled by.
func TestCallersRefundIDsNeverTakeTheServicesOwn(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)

		// A refund of another payment, named after the payment about to be abandoned.
		_, err := e.svc.Pay(ctx, card("other", 5000))
		require.NoError(t, err)
		_, err = e.svc.Refund(ctx, refund("void-att", "other", 1000))
		require.ErrorIs(t, err, payment.ErrInvalidRequest, "the Service's own name is refused")
		assert.Empty(t, e.refunds(t, "other"))
		assert.Equal(t, payment.StateApproved, e.get(t, "other").State)

		req := card("att", 5000)
		e.record(t, req)
		e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1)
		_, err = e.svc.Attempt(ctx, req)
		require.ErrorIs(t, err, payment.ErrAbandoned)
		_, err = e.sim.Approve(ctx, payment.ApproveRequest(req)) // the PG processes it after all
		require.NoError(t, err)
		body, sig := e.webhook(t, req.PaymentID)
		assert.NoError(t, e.svc.HandleWebhook(ctx, body, sig))
		p := e.get(t, req.PaymentID)
		assert.Equal(t, payment.StateRefunded, p.State, "the charge the PG made anyway is given back")
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>ABANDONED:abandoned", "ABANDONED>APPROVED:webhook",
			"APPROVED>REFUNDED:refund"}, e.history(t, req.PaymentID))
		assert.Equal(t, []string{"void-att:SUCCEEDED:5000"}, e.refunds(t, req.PaymentID))
		st, err := e.sim.Status(ctx, req.PaymentID)
		require.NoError(t, err)
		assert.Equal(t, int64(5000), st.Canceled, "refunded once at the PG")

		// A refund of a payment named after its own void.
		_, err = e.svc.Pay(ctx, card("own", 5000))
		require.NoError(t, err)
		_, err = e.svc.Refund(ctx, refund("void-own", "own", 1000))
		require.ErrorIs(t, err, payment.ErrInvalidRequest, "the Service's own name is refused")
		own := e.get(t, "own")
		assert.Equal(t, payment.StateApproved, own.State)
		assert.Empty(t, e.refunds(t, "own"))
		voided, err := e.svc.Voided(ctx, own)
		require.NoError(t, err)
		assert.False(t, voided, "an ordinary payment is not voided")
	})
}

// TestRefundRequestRefusesTheServicesNames: Validate refuses exactly the names the Service
// gives its own refunds.
func TestRefundRequestRefusesTheServicesNames(t *testing.T) {
	for id, reserved := range map[string]bool{
		"void-p": true, "review-p": true, "review2-p": true, "review12-p": true, "console-p": true, "console3-p": true,
		"void": false, "voided-p": false, "review": false, "reviewer-p": false, "review2": false, "consoles-p": false,
		"refund-o-0": false, "p-void-x": false, "Void-p": false,
	} {
		err := refund(id, "p", 1000).Validate()
		if reserved {
			assert.ErrorIs(t, err, payment.ErrInvalidRequest, id)
		} else {
			assert.NoError(t, err, id)
		}
	}
}
