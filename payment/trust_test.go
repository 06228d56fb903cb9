package payment_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// TestForgedApprovalRacingADecline: a declined card is being charged (the PG is slow) when a
// correctly signed but forged "approved" webhook arrives. The webhook is confirmed with the
// PG, which does not confirm it; the pay call's own answer (declined) is what is recorded.
func TestForgedApprovalRacingADecline(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil, pgsim.WithLatency(300*time.Millisecond, 300*time.Millisecond))
		req := card("pay-forged", 5000)
		req.Token = pgsim.TokenDecline
		type result struct {
			p   payment.Payment
			err error
		}
		paid := make(chan result, 1)
		go func() {
			p, err := e.svc.Pay(ctx, req)
			paid <- result{p, err}
		}()
		require.Eventually(t, func() bool {
			_, err := e.svc.Get(ctx, req.PaymentID)
			return err == nil
		}, 30*time.Second, 5*time.Millisecond, "the payment to be recorded")
		forged := []byte(`{"type":"payment.approved","payment_id":"pay-forged","amount":5000,"currency":"KRW","created_at":"2026-03-01T12:00:00Z"}`)
		err := e.svc.HandleWebhook(ctx, forged, pgsim.Sign([]byte(pgsim.DefaultWebhookSecret), forged))
		assert.ErrorIs(t, err, payment.ErrWebhookUnconfirmed)

		r := <-paid
		require.ErrorIs(t, r.err, payment.ErrDeclined)
		assert.Equal(t, payment.StateDeclined, r.p.State)
		assert.Equal(t, payment.StateDeclined, e.get(t, req.PaymentID).State)
		assert.Zero(t, e.obs.count(req.PaymentID, payment.StateApproved), "never approved")
		assert.Len(t, e.obs.contradicted(), 1)
		assert.Zero(t, e.sim.Charges(req.PaymentID))

		mismatches, err := e.svc.CrossCheck(ctx)
		require.NoError(t, err)
		assert.Empty(t, mismatches, "the record agrees with the PG")
	})
}

// TestReviewWhenTheGatewayContradictsTheRecord: the PG reverses an approval. Its genuine
// webhook, confirmed with it, contradicts the record: the payment moves to REVIEW (never
// settled automatically again), the Observer is told, and CrossCheck reports it. A reversal
// nobody announced is found by CrossCheck alone.
func TestReviewWhenTheGatewayContradictsTheRecord(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		for _, id := range []string{"pay-reversed", "pay-silent", "pay-fine"} {
			_, err := e.svc.Pay(ctx, card(id, 5000))
			require.NoError(t, err)
		}
		declined := card("pay-declined", 5000)
		declined.Token = pgsim.TokenDecline
		_, err := e.svc.Pay(ctx, declined)
		require.ErrorIs(t, err, payment.ErrDeclined)

		require.NoError(t, e.sim.Overturn("pay-reversed"))
		body, sig, err := e.sim.Webhook("pay-reversed")
		require.NoError(t, err)
		require.NoError(t, e.svc.HandleWebhook(ctx, body, sig))
		p := e.get(t, "pay-reversed")
		assert.Equal(t, payment.StateReview, p.State)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway", "APPROVED>REVIEW:webhook"}, e.history(t, "pay-reversed"))
		assert.Equal(t, []string{"pay-reversed:webhook:recorded APPROVED, the gateway says DECLINED"}, e.obs.contradicted())

		// Nothing settles it again, and it cannot be refunded automatically.
		again, err := e.svc.Pay(ctx, card("pay-reversed", 5000))
		assert.ErrorIs(t, err, payment.ErrUnderReview)
		assert.Equal(t, payment.StateReview, again.State)
		require.NoError(t, e.svc.HandleWebhook(ctx, body, sig), "a redelivery changes nothing")
		_, err = e.svc.Refund(ctx, refund("r-1", "pay-reversed", 5000))
		assert.ErrorIs(t, err, payment.ErrNotRefundable)
		assert.Equal(t, 1, e.obs.count("pay-reversed", payment.StateReview))

		// Declined here, approved there: money taken for a payment the record says failed.
		require.NoError(t, e.sim.Overturn("pay-declined"))
		require.NoError(t, e.sim.Overturn("pay-silent"))
		mismatches, err := e.svc.CrossCheck(ctx)
		require.NoError(t, err)
		got := map[string]string{}
		for _, m := range mismatches {
			got[m.Payment.ID] = m.Detail
		}
		assert.Equal(t, map[string]string{
			"pay-declined": "recorded DECLINED, the gateway says APPROVED",
			"pay-reversed": "under review: the gateway contradicted the record; a person must decide",
			"pay-silent":   "recorded APPROVED, the gateway says DECLINED",
		}, got)
		assert.Equal(t, payment.StateApproved, e.get(t, "pay-silent").State, "CrossCheck changes nothing")

		e.sim.SetFault(pgsim.FaultUnavailable)
		_, err = e.svc.CrossCheck(ctx)
		assert.ErrorIs(t, err, payment.ErrGatewayUnavailable, "an audit that cannot ask the PG says so")
	})
}

// TestSignedWebhookOfAnotherAmountIsReported: a correctly signed webhook whose amount or
// currency is not the record's is refused and changes nothing, and, being signed with our
// secret, is reported like any claim the record contradicts (ERROR log, Observer): either
// the secret leaked or the PG disagrees with the record, and a person must know.
func TestSignedWebhookOfAnotherAmountIsReported(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		_, err := e.svc.Pay(ctx, card("pay-amt", 5000))
		require.NoError(t, err)
		for _, body := range []string{
			`{"type":"payment.declined","payment_id":"pay-amt","amount":1,"currency":"KRW","created_at":"2026-03-01T12:00:00Z"}`,
			`{"type":"payment.approved","payment_id":"pay-amt","amount":5000,"currency":"USD","created_at":"2026-03-01T12:00:00Z"}`,
		} {
			err := e.svc.HandleWebhook(ctx, []byte(body), pgsim.Sign([]byte(pgsim.DefaultWebhookSecret), []byte(body)))
			assert.ErrorIs(t, err, payment.ErrInvalidWebhook)
		}
		assert.Equal(t, payment.StateApproved, e.get(t, "pay-amt").State, "nothing changed")
		got := e.obs.contradicted()
		require.Len(t, got, 2)
		for _, c := range got {
			assert.Contains(t, c, "pay-amt:webhook:")
		}
	})
}

// TestWebhookWhileTheGatewayIsDown: a genuine webhook arrives while the PG cannot be asked
// to confirm it. Nothing is recorded and the error says the gateway is unavailable (a 503
// the PG redelivers on), for an approval as for a refund; once the PG answers, the same
// delivery is recorded.
func TestWebhookWhileTheGatewayIsDown(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		e.unknown(t, card("pay-down", 5000))
		approved, approvedSig, err := e.sim.Webhook("pay-down")
		require.NoError(t, err)
		_, err = e.svc.Pay(ctx, card("pay-paid", 5000))
		require.NoError(t, err)
		e.sim.SetFault(pgsim.FaultUnavailable)
		_, err = e.svc.Refund(ctx, refund("r-down", "pay-paid", 2000))
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		canceled := []byte(`{"type":"payment.canceled","payment_id":"pay-paid","amount":5000,"currency":"KRW","cancel_id":"r-down","cancel_amount":2000,"created_at":"2026-03-01T12:00:00Z"}`)
		canceledSig := pgsim.Sign([]byte(pgsim.DefaultWebhookSecret), canceled)

		assert.ErrorIs(t, e.svc.HandleWebhook(ctx, approved, approvedSig), payment.ErrGatewayUnavailable)
		assert.ErrorIs(t, e.svc.HandleWebhook(ctx, canceled, canceledSig), payment.ErrGatewayUnavailable)
		assert.Equal(t, payment.StateUnknown, e.get(t, "pay-down").State)
		p := e.get(t, "pay-paid")
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Zero(t, p.Refunded)
		r, err := e.svc.GetRefund(ctx, "r-down")
		require.NoError(t, err)
		assert.Equal(t, payment.RefundPending, r.State)

		e.sim.SetFault(pgsim.FaultNone)
		require.NoError(t, e.svc.HandleWebhook(ctx, approved, approvedSig))
		require.NoError(t, e.svc.HandleWebhook(ctx, canceled, canceledSig))
		assert.Equal(t, payment.StateApproved, e.get(t, "pay-down").State)
		p = e.get(t, "pay-paid")
		assert.Equal(t, payment.StatePartiallyRefunded, p.State)
		assert.Equal(t, int64(2000), p.Refunded)
		assert.Empty(t, e.obs.contradicted())
	})
}
