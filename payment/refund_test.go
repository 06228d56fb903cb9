package payment_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

func refund(id, paymentID string, amount int64) payment.RefundRequest {
	return payment.RefundRequest{RefundID: id, PaymentID: paymentID, Amount: amount, Reason: "customer asked"}
}

func TestRefundPartialThenFull(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		_, err := e.svc.Pay(ctx, card("pay-1", 10_000))
		require.NoError(t, err)

		r, err := e.svc.Refund(ctx, refund("r-1", "pay-1", 3000))
		require.NoError(t, err)
		assert.Equal(t, payment.RefundSucceeded, r.State)
		assert.NotEmpty(t, r.PGReference)
		p := e.get(t, "pay-1")
		assert.Equal(t, payment.StatePartiallyRefunded, p.State)
		assert.Equal(t, int64(3000), p.Refunded)
		assert.Equal(t, int64(7000), p.Refundable())

		// More than what is left is refused and changes nothing.
		_, err = e.svc.Refund(ctx, refund("r-2", "pay-1", 7001))
		var ae *payment.RefundAmountError
		require.ErrorAs(t, err, &ae)
		assert.Equal(t, int64(7000), ae.Refundable)
		_, err = e.svc.GetRefund(ctx, "r-2")
		assert.ErrorIs(t, err, payment.ErrRefundNotFound)

		_, err = e.svc.Refund(ctx, refund("r-3", "pay-1", 4000))
		require.NoError(t, err)
		_, err = e.svc.Refund(ctx, refund("r-4", "pay-1", 3000))
		require.NoError(t, err)
		p = e.get(t, "pay-1")
		assert.Equal(t, payment.StateRefunded, p.State)
		assert.Equal(t, int64(10_000), p.Refunded)
		assert.Zero(t, p.RefundPending)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway",
			"APPROVED>PARTIALLY_REFUNDED:refund", "PARTIALLY_REFUNDED>REFUNDED:refund"}, e.history(t, "pay-1"))

		_, err = e.svc.Refund(ctx, refund("r-5", "pay-1", 1))
		assert.ErrorIs(t, err, payment.ErrNotRefundable)

		rs, err := e.svc.Refunds(ctx, "pay-1")
		require.NoError(t, err)
		require.Len(t, rs, 3)
		assert.Equal(t, int64(10_000), e.sim.Stats().CanceledAmount)
		assert.Len(t, e.obs.Events("refund_settled"), 3)
	})
}

func TestRefundIsIdempotent(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		_, err := e.svc.Pay(ctx, card("pay-1", 10_000))
		require.NoError(t, err)
		first, err := e.svc.Refund(ctx, refund("r-1", "pay-1", 10_000))
		require.NoError(t, err)
		again, err := e.svc.Refund(ctx, refund("r-1", "pay-1", 10_000))
		require.NoError(t, err)
		assert.Equal(t, first, again)
		assert.Equal(t, 1, e.sim.Stats().CancelCalls)

		_, err = e.svc.Refund(ctx, refund("r-1", "pay-1", 5000))
		assert.ErrorIs(t, err, payment.ErrRefundIDReused)
		otherReason := refund("r-1", "pay-1", 10_000)
		otherReason.Reason = "fraud"
		_, err = e.svc.Refund(ctx, otherReason)
		assert.ErrorIs(t, err, payment.ErrRefundIDReused, "the same refund ID with another request, as Stripe: a typed error")
		_, err = e.svc.Pay(ctx, card("pay-2", 10_000))
		require.NoError(t, err)
		_, err = e.svc.Refund(ctx, refund("r-1", "pay-2", 10_000))
		assert.ErrorIs(t, err, payment.ErrRefundIDReused)
		assert.Equal(t, payment.StateApproved, e.get(t, "pay-2").State)
	})
}

func TestRefundRefusals(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		declined := card("pay-d", 1000)
		declined.Token = pgsim.TokenDecline
		_, err := e.svc.Pay(ctx, declined)
		require.ErrorIs(t, err, payment.ErrDeclined)

		_, err = e.svc.Refund(ctx, refund("r-1", "pay-d", 1000))
		assert.ErrorIs(t, err, payment.ErrNotRefundable)
		e.sim.InjectFault("pay-u", pgsim.FaultLostResponse, 1) // charged, outcome unknown here
		_, err = e.svc.Pay(ctx, card("pay-u", 1000))
		require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
		_, err = e.svc.Refund(ctx, refund("r-u", "pay-u", 1000))
		assert.ErrorIs(t, err, payment.ErrNotRefundable, "not before the PG's answer is recorded")
		_, err = e.svc.GetRefund(ctx, "r-u")
		assert.ErrorIs(t, err, payment.ErrRefundNotFound)
		_, err = e.svc.Refund(ctx, refund("r-2", "nope", 1000))
		assert.ErrorIs(t, err, payment.ErrPaymentNotFound)
		_, err = e.svc.Refund(ctx, refund("", "pay-d", 1000))
		assert.ErrorIs(t, err, payment.ErrInvalidRequest)
		_, err = e.svc.Refund(ctx, refund("r-3", "pay-d", 0))
		assert.ErrorIs(t, err, payment.ErrInvalidRequest)

		_, err = e.svc.Pay(ctx, card("pay-ok", 1000))
		require.NoError(t, err)
		_, err = e.svc.Refund(ctx, refund("r-4", "pay-ok", math.MaxInt64))
		assert.ErrorIs(t, err, payment.ErrRefundExceedsAmount)
		assert.Zero(t, e.sim.Stats().CancelCalls)
		assert.Equal(t, int64(1000), e.get(t, "pay-ok").Refundable())
	})
}

// TestConcurrentRefundsNeverExceedTheAmount: many refunds race on one payment; exactly as many
// succeed as the amount allows, the rest are refused, and the PG refunded exactly the amount.
func TestConcurrentRefundsNeverExceedTheAmount(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		_, err := e.svc.Pay(ctx, card("pay-1", 10_000))
		require.NoError(t, err)

		const workers, part = 16, 3000 // 3 of them fit in 10,000
		var (
			wg                 sync.WaitGroup
			mu                 sync.Mutex
			succeeded, refused int
			inProgress         int
		)
		for i := range workers {
			wg.Go(func() {
				req := refund(fmt.Sprintf("r-%d", i), "pay-1", part)
				for {
					_, err := e.svc.Refund(ctx, req)
					mu.Lock()
					switch {
					case err == nil:
						succeeded++
					case errors.Is(err, payment.ErrRefundExceedsAmount):
						refused++
					case errors.Is(err, payment.ErrRefundInProgress):
						inProgress++
						mu.Unlock()
						time.Sleep(time.Millisecond)
						continue
					default:
						t.Errorf("refund %s: %v", req.RefundID, err)
					}
					mu.Unlock()
					return
				}
			})
		}
		wg.Wait()
		assert.Equal(t, 3, succeeded)
		assert.Equal(t, workers-3, refused)
		t.Logf("%d refunds waited for another one in progress", inProgress)

		p := e.get(t, "pay-1")
		assert.Equal(t, int64(9000), p.Refunded)
		assert.Zero(t, p.RefundPending)
		assert.Equal(t, payment.StatePartiallyRefunded, p.State)
		st := e.sim.Stats()
		assert.Equal(t, 3, st.Cancels)
		assert.Equal(t, int64(9000), st.CanceledAmount)
		rs, err := e.svc.Refunds(ctx, "pay-1")
		require.NoError(t, err)
		assert.Len(t, rs, 3)
		assert.Equal(t, 1, e.obs.count("pay-1", payment.StatePartiallyRefunded))
	})
}

// TestPendingRefundIsCompleted: a refund whose answer is lost stays PENDING with its amount
// reserved; a webhook or the reconciler completes it, once.
func TestPendingRefundIsCompleted(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		for _, id := range []string{"pay-1", "pay-2"} {
			_, err := e.svc.Pay(ctx, card(id, 10_000))
			require.NoError(t, err)
		}

		// By webhook.
		e.sim.InjectFault("r-1", pgsim.FaultLostResponse, 1)
		r, err := e.svc.Refund(ctx, refund("r-1", "pay-1", 4000))
		require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
		assert.Equal(t, payment.RefundPending, r.State)
		p := e.get(t, "pay-1")
		assert.Equal(t, int64(4000), p.RefundPending)
		assert.Equal(t, int64(6000), p.Refundable())
		_, err = e.svc.Refund(ctx, refund("r-other", "pay-1", 1000))
		assert.ErrorIs(t, err, payment.ErrRefundInProgress, "refunds of one payment are serialised")

		body, sig, err := e.sim.CancelWebhook("r-1")
		require.NoError(t, err)
		require.NoError(t, e.svc.HandleWebhook(ctx, body, sig))
		require.NoError(t, e.svc.HandleWebhook(ctx, body, sig), "a redelivery changes nothing")
		r, err = e.svc.GetRefund(ctx, "r-1")
		require.NoError(t, err)
		assert.Equal(t, payment.RefundSucceeded, r.State)
		p = e.get(t, "pay-1")
		assert.Equal(t, int64(4000), p.Refunded)
		assert.Zero(t, p.RefundPending)

		// By the reconciler, which submits it again with the same refund ID.
		e.sim.InjectFault("r-2", pgsim.FaultUnavailable, 1)
		r, err = e.svc.Refund(ctx, refund("r-2", "pay-2", 10_000))
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		assert.Equal(t, payment.RefundPending, r.State)
		e.clock.Advance(time.Hour)
		report, err := testkit.Must(payment.NewReconciler(e.svc))(t).Reconcile(ctx)
		require.NoError(t, err)
		assert.Equal(t, payment.ReconcileReport{Examined: 1, Settled: 1}, report)
		p = e.get(t, "pay-2")
		assert.Equal(t, payment.StateRefunded, p.State)
		assert.Equal(t, int64(10_000), p.Refunded)
		assert.Equal(t, int64(14_000), e.sim.Stats().CanceledAmount)
		assert.Equal(t, 2, e.sim.Stats().Cancels)
	})
}

// TestRejectedRefundReleasesItsAmount: the PG refuses a refund (here because part of the
// payment was refunded at the PG directly); the refund is FAILED and its amount refundable again.
// A signed webhook then claiming that the refund succeeded (the PG contradicting its own
// answer, or a forgery with a leaked secret) changes nothing and is reported as a
// contradiction, with what the PG says it refunded, for a person.
func TestRejectedRefundReleasesItsAmount(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		_, err := e.svc.Pay(ctx, card("pay-1", 10_000))
		require.NoError(t, err)
		_, err = e.sim.Cancel(ctx, payment.CancelRequest{CancelID: "console", PaymentID: "pay-1", Amount: 8000})
		require.NoError(t, err)

		r, err := e.svc.Refund(ctx, refund("r-1", "pay-1", 5000))
		require.ErrorIs(t, err, payment.ErrRefundRejected)
		var d *payment.DeclineError
		require.ErrorAs(t, err, &d)
		assert.Equal(t, pgsim.CodeExceedsRemaining, d.Code)
		assert.Equal(t, payment.RefundFailed, r.State)
		p := e.get(t, "pay-1")
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Zero(t, p.Refunded)
		assert.Zero(t, p.RefundPending)

		claim := []byte(`{"type":"payment.canceled","payment_id":"pay-1","amount":10000,"currency":"KRW","cancel_id":"r-1","cancel_amount":5000,"created_at":"2026-03-01T12:00:00Z"}`)
		err = e.svc.HandleWebhook(ctx, claim, pgsim.Sign([]byte(pgsim.DefaultWebhookSecret), claim))
		assert.ErrorIs(t, err, payment.ErrIllegalTransition)
		assert.Equal(t, []string{`pay-1:webhook:a webhook claims refund "r-1" of 5000 succeeded, recorded FAILED; the gateway has refunded 8000 of the payment, 0 recorded`},
			e.obs.contradicted())
		assert.Equal(t, p, e.get(t, "pay-1"), "nothing changed")
		r, err = e.svc.GetRefund(ctx, "r-1")
		require.NoError(t, err)
		assert.Equal(t, payment.RefundFailed, r.State)

		_, err = e.svc.Refund(ctx, refund("r-2", "pay-1", 2000))
		require.NoError(t, err)
		assert.Equal(t, payment.StatePartiallyRefunded, e.get(t, "pay-1").State)
	})
}

// TestRefundRetriedAfterTheGatewayPrunedItsKeyRefundsOnce: a refund whose answer was lost is
// completed a day later, after the PG pruned its idempotency key, by the client's retry, the
// Reconciler or the PG's webhook. None may send the refund again once the PG has made it:
// the PG would refund a second time.
func TestRefundRetriedAfterTheGatewayPrunedItsKeyRefundsOnce(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		for _, tc := range []struct {
			name  string
			fault pgsim.Fault
			retry func(t *testing.T, e *env, req payment.RefundRequest)
		}{
			{"Refund again", pgsim.FaultLostResponse, func(t *testing.T, e *env, req payment.RefundRequest) {
				_, err := e.svc.Refund(ctx, req)
				require.NoError(t, err)
			}},
			{"reconciler", pgsim.FaultLostResponse, func(t *testing.T, e *env, req payment.RefundRequest) {
				rec, err := payment.NewReconciler(e.svc)
				require.NoError(t, err)
				rep, err := rec.Reconcile(ctx)
				require.NoError(t, err)
				assert.Equal(t, payment.ReconcileReport{Examined: 1, Settled: 1}, rep)
			}},
			{"webhook", pgsim.FaultLostResponse, func(t *testing.T, e *env, req payment.RefundRequest) {
				body, sig, err := e.sim.CancelWebhook(req.RefundID)
				require.NoError(t, err)
				require.NoError(t, e.svc.HandleWebhook(ctx, body, sig))
			}},
			{"never reached the PG, Refund again", pgsim.FaultUnavailable, func(t *testing.T, e *env, req payment.RefundRequest) {
				_, err := e.svc.Refund(ctx, req)
				require.NoError(t, err)
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newForgetfulEnv(t, db)
				payID := "pay-" + tc.name
				_, err := e.svc.Pay(ctx, card(payID, 10_000))
				require.NoError(t, err)
				req := refund("r-"+tc.name, payID, 3000)
				e.sim.InjectFault(req.RefundID, tc.fault, 1)
				r, err := e.svc.Refund(ctx, req)
				require.Error(t, err)
				require.Equal(t, payment.RefundPending, r.State)

				e.clock.Advance(pgKeyRetention + time.Hour)
				tc.retry(t, e, req)

				r, err = e.svc.GetRefund(ctx, req.RefundID)
				require.NoError(t, err)
				assert.Equal(t, payment.RefundSucceeded, r.State)
				p := e.get(t, payID)
				assert.Equal(t, payment.StatePartiallyRefunded, p.State)
				assert.Equal(t, int64(3000), p.Refunded)
				assert.Zero(t, p.RefundPending)
				assert.Equal(t, int64(3000), e.sim.Stats().CanceledAmount, "refunded once at the PG")
				assert.Equal(t, 1, e.sim.Stats().Cancels)
				assert.Empty(t, e.obs.contradicted())
			})
		}
	})
}

// TestLateRefundTheGatewayContradicts: a PENDING refund is completed after the key window,
// but the PG's refunded total is neither the record's nor the record's plus the refund (a
// refund was made at the PG directly): nothing is sent again, the refund stays PENDING with
// its amount reserved, and the contradiction is reported for a person.
func TestLateRefundTheGatewayContradicts(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newForgetfulEnv(t, db)
		_, err := e.svc.Pay(ctx, card("pay-x", 10_000))
		require.NoError(t, err)
		e.sim.InjectFault("r-x", pgsim.FaultLostResponse, 1)
		_, err = e.svc.Refund(ctx, refund("r-x", "pay-x", 3000))
		require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
		_, err = e.sim.Cancel(ctx, payment.CancelRequest{CancelID: "console", PaymentID: "pay-x", Amount: 1000})
		require.NoError(t, err)

		e.clock.Advance(pgKeyRetention + time.Hour)
		r, err := e.svc.Refund(ctx, refund("r-x", "pay-x", 3000))
		require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
		e.requireRefundHeld(t, r, 3000)
		assert.Equal(t, int64(4000), e.sim.Stats().CanceledAmount, "nothing sent again")
		assert.Equal(t, []string{`pay-x:refund:refund "r-x" of 3000 pending, 0 refunded here, the gateway has refunded 4000`}, e.obs.contradicted())
	})
}

// statusTap is a Gateway decorator whose Status answers what tap makes of the PG's Status
// (status asks the PG).
type statusTap struct {
	payment.Gateway
	tap func(status func() (payment.GatewayPayment, error)) (payment.GatewayPayment, error)
}

func (g statusTap) Status(ctx context.Context, id string) (payment.GatewayPayment, error) {
	return g.tap(func() (payment.GatewayPayment, error) { return g.Gateway.Status(ctx, id) })
}

// lateEnv is an env whose simulator prunes its keys after pgKeyRetention on the env's clock,
// and whose Service asks for Status through tap.
func lateEnv(t *testing.T, db *bun.DB, tap func(status func() (payment.GatewayPayment, error)) (payment.GatewayPayment, error)) *env {
	t.Helper()
	var e *env
	e = newEnv(t, db, func(s *pgsim.Simulator) payment.Gateway { return statusTap{s, tap} },
		pgsim.WithKeyRetention(pgKeyRetention), pgsim.WithClock(func() time.Time { return e.clock.Now() }))
	return e
}

// TestLateRefundTrustsOnlyAnApprovedPaymentsTotal: a refund the PG made (its answer lost) is
// completed after the PG pruned its key, but the PG's Status is not that of the approved
// payment recorded: the PG is still processing it (its refunded total not yet booked), or it
// answers for another amount. Its refunded total says nothing then: the refund must not be
// sent again (the PG would refund twice); it stays PENDING, reserved, ErrOutcomeUnknown.
func TestLateRefundTrustsOnlyAnApprovedPaymentsTotal(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		for _, tc := range []struct {
			name         string
			rewrite      func(payment.GatewayPayment) payment.GatewayPayment
			contradicted int
		}{
			{"still processing", func(st payment.GatewayPayment) payment.GatewayPayment {
				st.State, st.Canceled = payment.GatewayPending, 0
				return st
			}, 0},
			{"another amount", func(st payment.GatewayPayment) payment.GatewayPayment {
				st.Amount, st.Canceled = 20_000, 0
				return st
			}, 1},
			{"declined", func(st payment.GatewayPayment) payment.GatewayPayment {
				st.State, st.Canceled = payment.GatewayDeclined, 0
				return st
			}, 1},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := lateEnv(t, db, func(status func() (payment.GatewayPayment, error)) (payment.GatewayPayment, error) {
					st, err := status()
					return tc.rewrite(st), err
				})
				payID := "pay-st-" + tc.name
				_, err := e.svc.Pay(ctx, card(payID, 10_000))
				require.NoError(t, err)
				req := refund("r-st-"+tc.name, payID, 3000)
				e.sim.InjectFault(req.RefundID, pgsim.FaultLostResponse, 1)
				_, err = e.svc.Refund(ctx, req)
				require.ErrorIs(t, err, payment.ErrOutcomeUnknown)

				e.clock.Advance(pgKeyRetention + time.Hour)
				r, err := e.svc.Refund(ctx, req)
				require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
				e.requireRefundHeld(t, r, 3000)
				assert.Equal(t, int64(3000), e.sim.Stats().CanceledAmount, "refunded once at the PG")
				assert.Equal(t, 1, e.sim.Stats().Cancels)
				assert.Len(t, e.obs.contradicted(), tc.contradicted)
			})
		}
	})
}

// TestLateRefundRacingAnotherProcessSettlesOnce: a refund never sent is completed after the
// key window by two Services on one database. While the first asks the PG, the second
// completes it and makes the next refund of the payment: the first finds the PG's total
// beyond its own reading, but the refund it completes has succeeded meanwhile. It must
// return that, not report a contradiction; each refund is made once.
func TestLateRefundRacingAnotherProcessSettlesOnce(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		var (
			other *payment.Service
			once  atomic.Bool
		)
		first, next := refund("r-race-1", "pay-race", 3000), refund("r-race-2", "pay-race", 2000)
		e := lateEnv(t, db, func(status func() (payment.GatewayPayment, error)) (payment.GatewayPayment, error) {
			if once.CompareAndSwap(false, true) { // the other Service runs while the PG is asked
				for _, req := range []payment.RefundRequest{first, next} {
					r, err := other.Refund(ctx, req)
					assert.NoError(t, err)
					assert.Equal(t, payment.RefundSucceeded, r.State)
				}
			}
			return status()
		})
		other = testkit.Must(payment.New(db, e.sim, payment.WithClock(e.clock.Now)))(t)
		_, err := e.svc.Pay(ctx, card("pay-race", 10_000))
		require.NoError(t, err)
		e.sim.InjectFault(first.RefundID, pgsim.FaultUnavailable, 1)
		_, err = e.svc.Refund(ctx, first)
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)

		e.clock.Advance(pgKeyRetention + time.Hour)
		r, err := e.svc.Refund(ctx, first)
		require.NoError(t, err)
		assert.Equal(t, payment.RefundSucceeded, r.State)
		p := e.get(t, "pay-race")
		assert.Equal(t, payment.StatePartiallyRefunded, p.State)
		assert.Equal(t, int64(5000), p.Refunded)
		assert.Zero(t, p.RefundPending)
		assert.Equal(t, int64(5000), e.sim.Stats().CanceledAmount)
		assert.Equal(t, 2, e.sim.Stats().Cancels)
		assert.Empty(t, e.obs.contradicted())
	})
}

// TestLateRetryFailsClosedWhenTheGatewayCannotBeAsked: past the key window, a payment and a
// refund whose answers were lost are retried while the PG's Status fails (unavailable, a
// 500, a timeout) or, for the refund, denies knowing the payment recorded approved. Neither
// is sent again: the payment stays UNKNOWN and the refund PENDING, with the error saying to
// retry (ErrGatewayUnavailable only when nothing could have been processed).
func TestLateRetryFailsClosedWhenTheGatewayCannotBeAsked(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		for _, tc := range []struct {
			name     string
			err      error
			want     error
			payments bool // also the payment: ErrNotAtGateway is the PG's answer for a payment
		}{
			{"unavailable", payment.ErrGatewayUnavailable, payment.ErrGatewayUnavailable, true},
			{"500", fmt.Errorf("500: %w", payment.ErrOutcomeUnknown), payment.ErrOutcomeUnknown, true},
			{"timeout", context.DeadlineExceeded, payment.ErrOutcomeUnknown, true},
			{"payment unknown to the PG", payment.ErrNotAtGateway, payment.ErrOutcomeUnknown, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var failing atomic.Bool
				e := lateEnv(t, db, func(status func() (payment.GatewayPayment, error)) (payment.GatewayPayment, error) {
					if failing.Load() {
						return payment.GatewayPayment{}, tc.err
					}
					return status()
				})
				lost, paid := card("fc-lost-"+tc.name, 7000), card("fc-paid-"+tc.name, 10_000)
				_, err := e.svc.Pay(ctx, paid)
				require.NoError(t, err)
				req := refund("fc-r-"+tc.name, paid.PaymentID, 3000)
				e.sim.InjectFault(lost.PaymentID, pgsim.FaultLostResponse, 1)
				e.sim.InjectFault(req.RefundID, pgsim.FaultLostResponse, 1)
				_, err = e.svc.Pay(ctx, lost)
				require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
				_, err = e.svc.Refund(ctx, req)
				require.ErrorIs(t, err, payment.ErrOutcomeUnknown)

				e.clock.Advance(pgKeyRetention + time.Hour)
				failing.Store(true)
				if tc.payments {
					p, err := e.svc.Pay(ctx, lost)
					require.ErrorIs(t, err, tc.want)
					assert.Equal(t, payment.StateUnknown, p.State)
					assert.Equal(t, payment.StateUnknown, e.get(t, lost.PaymentID).State)
					assert.Equal(t, 1, e.sim.ApproveCalls(lost.PaymentID), "not sent again")
				}
				r, err := e.svc.Refund(ctx, req)
				require.ErrorIs(t, err, tc.want)
				e.requireRefundHeld(t, r, 3000)
				assert.Equal(t, 1, e.sim.Stats().CancelCalls, "not sent again")
				assert.Equal(t, 2, e.sim.Stats().Charges)
				assert.Empty(t, e.obs.contradicted())
			})
		}
	})
}

// TestLateRefundRetriesRacingRefundOnce: past the key window, many retries and a reconciler
// race to complete a refund the PG made before its answer was lost, and one it never saw:
// each is made exactly once at the PG and recorded once.
func TestLateRefundRetriesRacingRefundOnce(t *testing.T) {
	made, unseen := refund("rr-made", "rr-pay-1", 3000), refund("rr-unseen", "rr-pay-2", 4000)
	eachDB(t, func(t *testing.T, db *bun.DB) {
		e, ctx := newForgetfulEnv(t, db), context.Background()
		for _, req := range []payment.RefundRequest{made, unseen} {
			testkit.Must(e.svc.Pay(ctx, card(req.PaymentID, 10_000)))(t)
		}
		e.raceLate(t, made.RefundID, unseen.RefundID, func(i int) error {
			_, err := e.svc.Refund(ctx, []payment.RefundRequest{made, unseen}[i])
			return err
		})

		for _, req := range []payment.RefundRequest{made, unseen} {
			p := e.get(t, req.PaymentID)
			assert.Equal(t, payment.StatePartiallyRefunded, p.State, req.RefundID)
			assert.Equal(t, req.Amount, p.Refunded, req.RefundID)
			assert.Zero(t, p.RefundPending, req.RefundID)
			assert.Equal(t, 1, e.obs.count(req.PaymentID, payment.StatePartiallyRefunded), req.RefundID)
		}
		assert.Equal(t, 2, e.sim.Stats().Cancels)
		assert.Equal(t, int64(7000), e.sim.Stats().CanceledAmount)
		assert.Empty(t, e.obs.contradicted())
	})
}

// TestConsoleRefundOfAPendingRefundsAmountUnlisted: as TestConsoleRefundOfAPendingRefundsAmount,
// with a PG that reports only its refunded total, not its refunds: the total cannot tell the
// operator's refund from the pending one, so the refund is not taken for made either; it
// stays PENDING with its amount reserved, and the contradiction is reported for a person.
func TestConsoleRefundOfAPendingRefundsAmountUnlisted(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := lateEnv(t, db, func(status func() (payment.GatewayPayment, error)) (payment.GatewayPayment, error) {
			st, err := status()
			st.Cancels = nil
			return st, err
		})
		_, err := e.svc.Pay(ctx, card("pay-u", 10_000))
		require.NoError(t, err)
		e.sim.InjectFault("r-u", pgsim.FaultUnavailable, 1)
		_, err = e.svc.Refund(ctx, refund("r-u", "pay-u", 3000))
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		_, err = e.sim.Cancel(ctx, payment.CancelRequest{CancelID: "console-u", PaymentID: "pay-u", Amount: 3000})
		require.NoError(t, err)

		e.clock.Advance(pgKeyRetention + time.Hour)
		r, err := e.svc.Refund(ctx, refund("r-u", "pay-u", 3000))
		require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
		e.requireRefundHeld(t, r, 3000)
		assert.Equal(t, int64(3000), e.sim.Stats().CanceledAmount, "nothing sent")
		assert.Equal(t, []string{`pay-u:refund:refund "r-u" of 3000 pending, 0 refunded here, the gateway has refunded 3000 and does not list its refunds`},
			e.obs.contradicted())
	})
}

// TestConsoleRefundOfAPendingRefundsAmount: a refund is recorded PENDING but never reaches
// the PG (it is down); meanwhile an operator refunds exactly the same amount in the PG's
// console, a refund of its own. When the refund is then completed (retried after the key
// window, or by the Reconciler, which always asks the PG first), the PG's refunded total is
// the record's plus the refund's amount, which is also what it would be had the PG made the
// refund. Taking it for the refund records a refund the PG never made and swallows the
// operator's: the customer gets one refund where two were made. The PG's record of its
// refunds, each under the cancel ID it was made with, tells them apart: the refund was not
// made, the PG holds a refund the record does not explain, so nothing is sent, the refund
// stays PENDING with its amount reserved, and the contradiction is reported for a person.
func TestConsoleRefundOfAPendingRefundsAmount(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		for i, tc := range []struct {
			name    string
			advance time.Duration
			retry   func(t *testing.T, e *env, req payment.RefundRequest, pending int)
		}{
			{"Refund again past the key window", pgKeyRetention + time.Hour, func(t *testing.T, e *env, req payment.RefundRequest, pending int) {
				r, err := e.svc.Refund(ctx, req)
				require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
				assert.Equal(t, payment.RefundPending, r.State)
			}},
			{"reconciler past the key window", pgKeyRetention + time.Hour, func(t *testing.T, e *env, req payment.RefundRequest, pending int) {
				rec := testkit.Must(payment.NewReconciler(e.svc))(t)
				rep, err := rec.Reconcile(ctx)
				require.NoError(t, err)
				assert.Equal(t, payment.ReconcileReport{Examined: pending, Unsettled: pending}, rep)
			}},
			{"reconciler within the key window", time.Minute, func(t *testing.T, e *env, req payment.RefundRequest, pending int) {
				rec := testkit.Must(payment.NewReconciler(e.svc))(t)
				rep, err := rec.Reconcile(ctx)
				require.NoError(t, err)
				assert.Equal(t, payment.ReconcileReport{Examined: pending, Unsettled: pending}, rep)
			}},
		} {
			// The refunds of the cases before stay PENDING too, and the Reconciler examines them
			// (on another simulator, which has not seen their payments: unsettled).
			pending := i + 1
			t.Run(tc.name, func(t *testing.T) {
				e := newForgetfulEnv(t, db)
				payID := "pay-" + tc.name
				_, err := e.svc.Pay(ctx, card(payID, 10_000))
				require.NoError(t, err)
				req := refund("r-"+tc.name, payID, 3000)
				e.sim.InjectFault(req.RefundID, pgsim.FaultUnavailable, 1)
				r, err := e.svc.Refund(ctx, req)
				require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
				require.Equal(t, payment.RefundPending, r.State)
				_, err = e.sim.Cancel(ctx, payment.CancelRequest{CancelID: "console-" + tc.name, PaymentID: payID, Amount: 3000})
				require.NoError(t, err)

				e.clock.Advance(tc.advance)
				tc.retry(t, e, req, pending)

				r, err = e.svc.GetRefund(ctx, req.RefundID)
				require.NoError(t, err)
				assert.Equal(t, payment.RefundPending, r.State, "the PG never made the refund")
				p := e.get(t, payID)
				assert.Equal(t, payment.StateApproved, p.State)
				assert.Zero(t, p.Refunded)
				assert.Equal(t, int64(3000), p.RefundPending)
				assert.Equal(t, int64(3000), e.sim.Stats().CanceledAmount, "only the operator's refund, nothing sent")
				assert.Equal(t, 1, e.sim.Stats().Cancels)
				assert.Equal(t, []string{fmt.Sprintf(`%s:refund:refund %q of 3000 pending, 0 refunded here, the gateway has refunded 3000, none of it under %q`,
					payID, req.RefundID, req.RefundID)}, e.obs.contradicted())
			})
		}
	})
}
