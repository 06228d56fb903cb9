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

// TestSignedRefundWebhookContradictingTheRecordIsReported: a correctly signed refund webhook
// (the secret leaked, or a PG that disagrees) naming a recorded refund with another amount
// or another payment is refused, changes nothing, and, like a signed approval contradicting
// the record, is logged and told to the Observer as a contradiction: a person must know.
func TestSignedRefundWebhookContradictingTheRecordIsReported(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		_, err := e.svc.Pay(ctx, card("pay-1", 5000))
		require.NoError(t, err)
		e.sim.InjectFault("r-1", pgsim.FaultLostResponse, 1)
		_, err = e.svc.Refund(ctx, refund("r-1", "pay-1", 2000))
		require.ErrorIs(t, err, payment.ErrOutcomeUnknown)

		sign := func(body string) (string, string) {
			return body, pgsim.Sign([]byte(pgsim.DefaultWebhookSecret), []byte(body))
		}
		for _, body := range []string{
			`{"type":"payment.canceled","payment_id":"pay-1","amount":5000,"currency":"KRW","cancel_id":"r-1","cancel_amount":5000,"created_at":"2026-03-01T12:00:00Z"}`,
			`{"type":"payment.canceled","payment_id":"pay-other","amount":5000,"currency":"KRW","cancel_id":"r-1","cancel_amount":2000,"created_at":"2026-03-01T12:00:00Z"}`,
		} {
			b, sig := sign(body)
			assert.ErrorIs(t, e.svc.HandleWebhook(ctx, []byte(b), sig), payment.ErrInvalidWebhook)
		}
		assert.Equal(t, []string{"r-1:PENDING:2000"}, e.refunds(t, "pay-1"), "nothing changed")
		e.requireRefundHeld(t, payment.Refund{PaymentID: "pay-1", State: payment.RefundPending}, 2000)
		assert.Equal(t, []string{
			`pay-1:webhook:a webhook claims refund "r-1" is 5000 of "pay-1", recorded 2000 of "pay-1"`,
			`pay-1:webhook:a webhook claims refund "r-1" is 2000 of "pay-other", recorded 2000 of "pay-1"`,
		}, e.obs.contradicted())
	})
}

// TestSignedRefundWebhookTheGatewayRefusesIsUnconfirmed: a correctly signed webhook claims
// that a PENDING refund succeeded, but the PG, asked, refuses that refund (an operator
// refunded most of the payment in the PG's console meanwhile). The PG's answer is recorded
// (the refund FAILED, its amount released), and the webhook, whose claim the PG does not
// confirm, is refused with ErrWebhookUnconfirmed and reported as a contradiction, as an
// approval the PG does not confirm is: not answered with the refund's own rejection, which
// wraps the PG's *DeclineError, so that the webhook route answered the PG 422
// payment_declined, and nobody was told of the claim.
func TestSignedRefundWebhookTheGatewayRefusesIsUnconfirmed(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		_, err := e.svc.Pay(ctx, card("pay-1", 10_000))
		require.NoError(t, err)
		e.sim.InjectFault("r-1", pgsim.FaultUnavailable, 1)
		_, err = e.svc.Refund(ctx, refund("r-1", "pay-1", 5000))
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		_, err = e.sim.Cancel(ctx, payment.CancelRequest{CancelID: "console", PaymentID: "pay-1", Amount: 8000})
		require.NoError(t, err)

		claim := []byte(`{"type":"payment.canceled","payment_id":"pay-1","amount":10000,"currency":"KRW","cancel_id":"r-1","cancel_amount":5000,"created_at":"2026-03-01T12:00:00Z"}`)
		err = e.svc.HandleWebhook(ctx, claim, pgsim.Sign([]byte(pgsim.DefaultWebhookSecret), claim))
		require.ErrorIs(t, err, payment.ErrWebhookUnconfirmed)
		assert.NotErrorIs(t, err, payment.ErrRefundRejected, "the webhook is refused, not the caller's refund")
		assert.Equal(t, []string{"r-1:FAILED:5000"}, e.refunds(t, "pay-1"), "the PG's answer is recorded")
		p := e.get(t, "pay-1")
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Zero(t, p.Refunded)
		assert.Zero(t, p.RefundPending)
		assert.Equal(t, []string{`pay-1:webhook:a webhook claims refund "r-1" of 5000 succeeded, the gateway refused it: ` +
			pgsim.CodeExceedsRemaining + `: 5000 exceeds the 2000 left`}, e.obs.contradicted())
	})
}
