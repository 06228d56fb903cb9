package payment_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// TestRefundWebhookMySQLPaused: a card payment of 5,000 won is approved, and a refund of
// 2,000 of it is made at the PG but its answer lost, so the refund stays PENDING. The PG's
// genuine webhook announcing the refund then arrives while the Service's database server is
// paused (docker pause: connections stay open, nothing answers); the DSN reads and writes
// with a short timeout, so the handler gives up. It must fail as the database being
// unavailable (errcode.ErrUnavailable, which the webhook route answers 503 so the PG
// delivers it again), not with a domain answer (the webhook invalid, unconfirmed, or the
// refund rejected), and nothing may be refunded again at the PG. Once the server resumes,
// the PG's redelivery settles the refund SUCCEEDED, once: the payment PARTIALLY_REFUNDED
// with exactly 2,000 refunded and nothing pending, the PG having made exactly one refund;
// a third delivery changes nothing.
func TestRefundWebhookMySQLPaused(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db := testenv.MySQLAt(t, testenv.Impatient(t, dsn, 2*time.Second))
	ctx := context.Background()
	require.NoError(t, payment.CreateSchema(ctx, db))

	e := newEnv(t, db, nil)
	require.ErrorIs(t, e.refundFaulted(t, "pay-1", "r-1", pgsim.FaultLostResponse), payment.ErrOutcomeUnknown)
	e.requireRefundHeld(t, payment.Refund{PaymentID: "pay-1", State: payment.RefundPending}, 2000)
	require.Equal(t, 1, e.sim.Stats().Cancels, "the PG made the refund whose answer was lost")
	body, sig, err := e.sim.CancelWebhook("r-1")
	require.NoError(t, err)

	server.Pause(t)
	err = e.svc.HandleWebhook(ctx, body, sig)
	require.Error(t, err, "the database is paused")
	t.Logf("while paused: %v", err)
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	assert.Equal(t, errcode.DependencyUnavailable, errcode.CodeOf(err))
	for _, domain := range []error{payment.ErrInvalidWebhook, payment.ErrWebhookUnconfirmed, payment.ErrRefundRejected,
		payment.ErrIllegalTransition, payment.ErrRefundNotFound, payment.ErrPaymentNotFound} {
		assert.NotErrorIs(t, err, domain)
	}
	assert.Equal(t, 1, e.sim.Stats().Cancels, "nothing refunded again while paused")
	server.Unpause(t)

	exact := func(t *testing.T, what string) {
		t.Helper()
		assert.Equal(t, []string{"r-1:SUCCEEDED:2000"}, e.refunds(t, "pay-1"), what)
		p := e.get(t, "pay-1")
		assert.Equal(t, payment.StatePartiallyRefunded, p.State, what)
		assert.Equal(t, int64(2000), p.Refunded, what)
		assert.Zero(t, p.RefundPending, what)
		st, err := e.sim.Status(ctx, "pay-1")
		require.NoError(t, err)
		assert.Equal(t, int64(2000), st.Canceled, what+": refunded once at the PG")
		assert.Equal(t, 1, e.sim.Stats().Cancels, what+": one refund made at the PG")
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway", "APPROVED>PARTIALLY_REFUNDED:refund"},
			e.history(t, "pay-1"), what)
		assert.Equal(t, 1, e.obs.Count("refund_settled", map[string]string{"refund_id": "r-1", "state": string(payment.RefundSucceeded)}),
			what+": the refund settled once")
		assert.Empty(t, e.obs.contradicted(), what)
	}
	require.NoError(t, e.svc.HandleWebhook(ctx, body, sig), "the redelivery once resumed")
	exact(t, "the redelivery")
	before := e.get(t, "pay-1")
	require.NoError(t, e.svc.HandleWebhook(ctx, body, sig), "a third delivery")
	exact(t, "a third delivery")
	assert.Equal(t, before, e.get(t, "pay-1"), "a third delivery changes nothing")
	e.noMismatch(t, "pay-1")
}
