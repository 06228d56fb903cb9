package payment_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// unknown makes an UNKNOWN payment the simulator approved (or declined) but whose answer was lost.
func (e *env) unknown(t *testing.T, req payment.PayRequest) {
	t.Helper()
	e.sim.InjectFault(req.PaymentID, pgsim.FaultLostResponse, 1)
	p, err := e.svc.Pay(context.Background(), req)
	require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
	require.Equal(t, payment.StateUnknown, p.State)
}

func TestWebhookSettlesOnce(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		e.unknown(t, card("pay-1", 5000))
		body, sig := e.webhook(t, "pay-1")
		for range 3 {
			require.NoError(t, e.svc.HandleWebhook(ctx, body, sig))
		}
		p := e.get(t, "pay-1")
		assert.Equal(t, payment.StateApproved, p.State)
		assert.NotEmpty(t, p.PGReference)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>UNKNOWN:no_answer", "UNKNOWN>APPROVED:webhook"}, e.history(t, "pay-1"))

		declined := card("pay-2", 5000)
		declined.Token = pgsim.TokenDecline
		e.unknown(t, declined)
		e.deliverWebhook(t, "pay-2")
		p = e.get(t, "pay-2")
		assert.Equal(t, payment.StateDeclined, p.State)
		assert.Equal(t, pgsim.CodeCardDeclined, p.DeclineCode)

		// A late "approved" for a payment refunded since changes nothing.
		_, err := e.svc.Refund(ctx, refund("r-1", "pay-1", 5000))
		require.NoError(t, err)
		e.deliverWebhook(t, "pay-1")
		assert.Equal(t, payment.StateRefunded, e.get(t, "pay-1").State)
	})
}

// TestWebhookOfWhatIsRecordedAsksNothing: a webhook that claims what the record already
// holds (the approval or decline the PG's own answer settled: every paid order's webhook)
// has nothing to confirm, so the PG is not asked again (Gateway.Status) and nothing is
// recorded; the webhook is accepted however often it comes. One that claims anything
// else is still confirmed with the PG.
func TestWebhookOfWhatIsRecordedAsksNothing(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		e := newEnv(t, db, nil)
		e.payApprovedAndDeclined(t, "pay-ok", "pay-no")
		before := e.sim.Stats().StatusCalls
		for range 2 {
			e.deliverWebhook(t, "pay-ok")
			e.deliverWebhook(t, "pay-no")
		}
		assert.Equal(t, before, e.sim.Stats().StatusCalls)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}, e.history(t, "pay-ok"))
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>DECLINED:gateway"}, e.history(t, "pay-no"))

		e.unknown(t, card("pay-unknown", 5000))
		e.deliverWebhook(t, "pay-unknown")
		assert.Equal(t, before+1, e.sim.Stats().StatusCalls)
		assert.Equal(t, payment.StateApproved, e.get(t, "pay-unknown").State)
		assert.Empty(t, e.obs.contradicted())
	})
}

func TestWebhookRejectsForgeries(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		e.unknown(t, card("pay-1", 5000))
		body, sig := e.webhook(t, "pay-1")

		assert.ErrorIs(t, e.svc.HandleWebhook(ctx, body, "v1=00"), payment.ErrInvalidWebhook)
		assert.ErrorIs(t, e.svc.HandleWebhook(ctx, body, ""), payment.ErrInvalidWebhook)
		tampered := append([]byte(nil), body...)
		tampered[len(tampered)-3] ^= 1
		assert.ErrorIs(t, e.svc.HandleWebhook(ctx, tampered, sig), payment.ErrInvalidWebhook)
		other := pgsim.Sign([]byte("another secret"), body)
		assert.ErrorIs(t, e.svc.HandleWebhook(ctx, body, other), payment.ErrInvalidWebhook)

		// Correctly signed, but for another amount than recorded.
		forged := []byte(`{"type":"payment.approved","payment_id":"pay-1","amount":1,"currency":"KRW","created_at":"2026-03-01T12:00:00Z"}`)
		assert.ErrorIs(t, e.svc.HandleWebhook(ctx, forged, pgsim.Sign([]byte(pgsim.DefaultWebhookSecret), forged)), payment.ErrInvalidWebhook)
		unknownKind := []byte(`{"type":"payment.teleported","payment_id":"pay-1","amount":5000,"currency":"KRW","created_at":"2026-03-01T12:00:00Z"}`)
		assert.ErrorIs(t, e.svc.HandleWebhook(ctx, unknownKind, pgsim.Sign([]byte(pgsim.DefaultWebhookSecret), unknownKind)), payment.ErrInvalidWebhook)
		assert.Equal(t, payment.StateUnknown, e.get(t, "pay-1").State, "nothing changed")

		// Correctly signed (the secret leaked), claiming what the PG did not do: the PG, asked
		// directly, says declined; nothing is recorded from the webhook's word.
		declined := card("pay-2", 5000)
		declined.Token = pgsim.TokenDecline
		_, err := e.svc.Pay(ctx, declined)
		require.ErrorIs(t, err, payment.ErrDeclined)
		lie := []byte(`{"type":"payment.approved","payment_id":"pay-2","amount":5000,"currency":"KRW","created_at":"2026-03-01T12:00:00Z"}`)
		assert.ErrorIs(t, e.svc.HandleWebhook(ctx, lie, pgsim.Sign([]byte(pgsim.DefaultWebhookSecret), lie)), payment.ErrWebhookUnconfirmed)
		assert.Equal(t, payment.StateDeclined, e.get(t, "pay-2").State)
		assert.Equal(t, []string{"pay-1:webhook:a webhook claims 1 KRW, recorded 5000 KRW",
			"pay-2:webhook:a webhook claims APPROVED, the gateway says DECLINED"}, e.obs.contradicted())

		// Correctly signed, naming a payment or refund with a NUL byte in its ID: not found,
		// on SQLite as on MySQL (bun's own SQLite dialect refused the lookup: a 500 the PG
		// would redeliver for ever).
		nul := []byte(`{"type":"payment.approved","payment_id":"pay-1\u0000x","amount":5000,"currency":"KRW","created_at":"2026-03-01T12:00:00Z"}`)
		assert.ErrorIs(t, e.svc.HandleWebhook(ctx, nul, pgsim.Sign([]byte(pgsim.DefaultWebhookSecret), nul)), payment.ErrPaymentNotFound)
		nul = []byte(`{"type":"payment.canceled","payment_id":"pay-1","cancel_id":"c\u0000d","cancel_amount":1,"amount":5000,"currency":"KRW","created_at":"2026-03-01T12:00:00Z"}`)
		assert.ErrorIs(t, e.svc.HandleWebhook(ctx, nul, pgsim.Sign([]byte(pgsim.DefaultWebhookSecret), nul)), payment.ErrRefundNotFound)

		// No payment can have such an ID: bun's MySQL dialect would store it without its NUL.
		_, err = e.svc.Pay(ctx, card("pay\x00x", 5000))
		assert.ErrorIs(t, err, payment.ErrInvalidRequest)

		noVerifier, err := payment.New(db, e.sim)
		require.NoError(t, err)
		assert.ErrorIs(t, noVerifier.HandleWebhook(ctx, body, sig), payment.ErrWebhookNotConfigured)
	})
}

// TestWebhookRacesReconcilerAndRetry: for many UNKNOWN payments, the PG's webhook, the
// reconciler and the client's retry all try to settle at once. Each payment is settled exactly
// once: one transition row into APPROVED, one observed transition, no error for anyone.
func TestWebhookRacesReconcilerAndRetry(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		rec := testkit.Must(payment.NewReconciler(e.svc, payment.WithThreshold(0)))(t)
		const rounds = 25
		for i := range rounds {
			req := card(fmt.Sprintf("race-%02d", i), 5000)
			e.unknown(t, req)
			body, sig := e.webhook(t, req.PaymentID)

			var wg sync.WaitGroup
			wg.Go(func() { assert.NoError(t, e.svc.HandleWebhook(ctx, body, sig)) })
			wg.Go(func() {
				_, err := rec.Reconcile(ctx)
				assert.NoError(t, err)
			})
			wg.Go(func() {
				p, err := e.svc.Pay(ctx, req)
				assert.NoError(t, err)
				assert.Equal(t, payment.StateApproved, p.State)
			})
			wg.Wait()

			ts, err := e.svc.Transitions(ctx, req.PaymentID)
			require.NoError(t, err)
			require.Len(t, ts, 3, "created, unknown, approved: %v", ts)
			assert.Equal(t, payment.StateApproved, ts[2].To)
			assert.Equal(t, 1, e.obs.count(req.PaymentID, payment.StateApproved))
			assert.Equal(t, 1, e.sim.Charges(req.PaymentID))
		}
		assert.Equal(t, rounds, e.sim.Stats().Charges)
	})
}

// TestWebhookDeliveredBySimulator: the simulator delivers its own webhooks (here in process)
// and they settle a payment whose response was lost, without anyone retrying.
func TestWebhookDeliveredBySimulator(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		var svc *payment.Service
		late := make(chan struct{}) // the webhook arrives after the lost response
		e := newEnv(t, db, nil, pgsim.WithWebhook(func(ctx context.Context, body []byte, sig string) error {
			select {
			case <-late:
				return svc.HandleWebhook(ctx, body, sig)
			case <-ctx.Done():
				return ctx.Err()
			}
		}, 3))
		svc = e.svc
		e.unknown(t, card("pay-1", 5000))
		close(late)
		require.Eventually(t, func() bool {
			p, err := e.svc.Get(ctx, "pay-1")
			return err == nil && p.State == payment.StateApproved
		}, 30*time.Second, 5*time.Millisecond, "the webhook to settle the payment")
		e.sim.Close() // waits for deliveries in flight
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>UNKNOWN:no_answer", "UNKNOWN>APPROVED:webhook"}, e.history(t, "pay-1"))
	})
}

func TestReconcilerRun(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		e := newEnv(t, db, nil)
		e.unknown(t, card("pay-1", 5000))
		e.sim.InjectFault("pay-2", pgsim.FaultUnavailable, 1)
		_, err := e.svc.Pay(ctx, card("pay-2", 5000))
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)

		// The PG is down: the pass leaves both as they are.
		e.clock.Advance(time.Hour)
		e.sim.SetFault(pgsim.FaultUnavailable)
		rec := testkit.Must(payment.NewReconciler(e.svc, payment.WithInterval(5*time.Millisecond), payment.WithBatchSize(1), payment.WithConcurrency(2)))(t)
		report, err := rec.Reconcile(ctx)
		require.NoError(t, err)
		assert.Equal(t, payment.ReconcileReport{Examined: 2, Unsettled: 2}, report)
		assert.Equal(t, payment.StateUnknown, e.get(t, "pay-1").State)
		assert.Equal(t, payment.StateRequested, e.get(t, "pay-2").State)

		e.sim.SetFault(pgsim.FaultNone)
		done := make(chan error, 1)
		go func() { done <- rec.Run(ctx) }()
		require.Eventually(t, func() bool {
			return e.get(t, "pay-1").State == payment.StateApproved && e.get(t, "pay-2").State == payment.StateApproved
		}, 30*time.Second, 5*time.Millisecond, "the reconciler loop to settle both")
		cancel()
		require.NoError(t, <-done)
		assert.Equal(t, 2, e.sim.Stats().Charges)
	})
}

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
		body, sig := e.webhook(t, "pay-reversed")
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
		assert.Equal(t, map[string]string{
			"pay-declined": "recorded DECLINED, the gateway says APPROVED",
			"pay-reversed": "under review: the gateway contradicted the record; a person must decide",
			"pay-silent":   "recorded APPROVED, the gateway says DECLINED",
		}, e.crossCheck(t))
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
		approved, approvedSig := e.webhook(t, "pay-down")
		_, err := e.svc.Pay(ctx, card("pay-paid", 5000))
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

// TestWebhookOfWhatIsRecordedHidesNoAnnouncement: a webhook claiming what the record holds
// is not confirmed with the PG (02ed90b), and it hides nothing the PG announces. After the
// PG reversed an approval (or charged a declined card) without a word, a stale webhook of
// the recorded outcome — a late redelivery, or a replay signed with a leaked secret —
// changes nothing, asks nothing and reports nothing: like no webhook at all, the reversal
// is found by CrossCheck (the audit). The PG's announcement of the reversal, a webhook of
// the other outcome, is still confirmed and moves the payment to REVIEW. An approval with a
// refund pending leaves the refund to its own webhook or the Reconciler, as before.
func TestWebhookOfWhatIsRecordedHidesNoAnnouncement(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		e.payApprovedAndDeclined(t, "pay-rev", "pay-chg")
		_, err := e.svc.Pay(ctx, card("pay-ref", 5000))
		require.NoError(t, err)
		e.sim.InjectFault("r-ref", pgsim.FaultLostResponse, 1)
		_, err = e.svc.Refund(ctx, refund("r-ref", "pay-ref", 2000))
		require.ErrorIs(t, err, payment.ErrOutcomeUnknown)

		staleRev, sigRev := e.webhook(t, "pay-rev")
		staleChg, sigChg := e.webhook(t, "pay-chg")
		require.NoError(t, e.sim.Overturn("pay-rev"))
		require.NoError(t, e.sim.Overturn("pay-chg"))
		before := e.sim.Stats().StatusCalls
		for range 2 {
			require.NoError(t, e.svc.HandleWebhook(ctx, staleRev, sigRev))
			require.NoError(t, e.svc.HandleWebhook(ctx, staleChg, sigChg))
			e.deliverWebhook(t, "pay-ref")
		}
		assert.Equal(t, before, e.sim.Stats().StatusCalls, "nothing to confirm")
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}, e.history(t, "pay-rev"))
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>DECLINED:gateway"}, e.history(t, "pay-chg"))
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}, e.history(t, "pay-ref"))
		assert.Equal(t, []string{"r-ref:PENDING:2000"}, e.refunds(t, "pay-ref"))
		assert.Equal(t, int64(2000), e.get(t, "pay-ref").RefundPending)
		assert.Empty(t, e.obs.contradicted())

		assert.Equal(t, map[string]string{
			"pay-rev": "recorded APPROVED, the gateway says DECLINED",
			"pay-chg": "recorded DECLINED, the gateway says APPROVED",
		}, e.crossCheck(t), "the audit finds what no webhook announced")

		// The PG announces: each announcement is confirmed and moves the payment to REVIEW.
		before = e.sim.Stats().StatusCalls
		for _, id := range []string{"pay-rev", "pay-chg"} {
			body, sig := e.webhook(t, id)
			err := e.svc.HandleWebhook(ctx, body, sig)
			assert.NoError(t, err, id)
			assert.Equal(t, payment.StateReview, e.get(t, id).State, id)
		}
		assert.Equal(t, []string{
			"pay-rev:webhook:recorded APPROVED, the gateway says DECLINED",
			"pay-chg:webhook:recorded DECLINED, the gateway says APPROVED",
		}, e.obs.contradicted())
		assert.Equal(t, before+2, e.sim.Stats().StatusCalls, "one Status call per announcement")
	})
}
