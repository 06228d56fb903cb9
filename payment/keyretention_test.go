package payment_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// pgKeyRetention is how long the simulator keeps its idempotency keys in these tests, as
// Stripe keeps its own: a key repeated after it is pruned is a new request.
const pgKeyRetention = 24 * time.Hour

// newForgetfulEnv is an env whose simulator, on the env's clock, prunes its idempotency keys
// after pgKeyRetention.
func newForgetfulEnv(t *testing.T, db *bun.DB) *env {
	t.Helper()
	var e *env
	e = newEnv(t, db, nil, pgsim.WithKeyRetention(pgKeyRetention),
		pgsim.WithClock(func() time.Time { return e.clock.Now() }))
	return e
}

// TestRetryAfterTheGatewayPrunedItsKeyChargesOnce: a payment whose outcome is unknown (a lost
// response) or that the PG charged just before we died (left REQUESTED) is retried a day
// later, after the PG has pruned its idempotency key. The retry must learn the PG's answer
// (Status) rather than send the approval again, which the PG would take as a new charge.
func TestRetryAfterTheGatewayPrunedItsKeyChargesOnce(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		pay := func(e *env, req payment.PayRequest) (payment.Payment, error) { return e.svc.Pay(ctx, req) }
		diedAfterTheCharge := func(t *testing.T, e *env, req payment.PayRequest) {
			require.NoError(t, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				_, err := e.svc.Request(ctx, tx, req)
				return err
			}))
			_, err := e.sim.Approve(ctx, payment.ApproveRequest{PaymentID: req.PaymentID, OrderID: req.OrderID,
				Amount: req.Amount, Currency: req.Currency, Method: req.Method, Token: req.Token}) // never recorded
			require.NoError(t, err)
		}
		for _, tc := range []struct {
			name    string
			unknown func(t *testing.T, e *env, req payment.PayRequest) // leaves req unsettled
			retry   func(e *env, req payment.PayRequest) (payment.Payment, error)
			history []string
		}{
			{"lost response, Pay again", func(t *testing.T, e *env, req payment.PayRequest) {
				e.sim.InjectFault(req.PaymentID, pgsim.FaultLostResponse, 1)
				p, err := e.svc.Pay(ctx, req)
				require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
				require.Equal(t, payment.StateUnknown, p.State)
			}, pay, []string{">REQUESTED:created", "REQUESTED>UNKNOWN:no_answer", "UNKNOWN>APPROVED:gateway"}},
			{"charged, then the process died; Submit again", diedAfterTheCharge,
				func(e *env, req payment.PayRequest) (payment.Payment, error) { return e.svc.Submit(ctx, req) },
				[]string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}},
			{"charged, then the process died; the Reconciler", diedAfterTheCharge,
				func(e *env, req payment.PayRequest) (payment.Payment, error) {
					rec, err := payment.NewReconciler(e.svc)
					if err != nil {
						return payment.Payment{}, err
					}
					if _, err := rec.Reconcile(ctx); err != nil {
						return payment.Payment{}, err
					}
					return e.svc.Get(ctx, req.PaymentID)
				},
				[]string{">REQUESTED:created", "REQUESTED>APPROVED:reconciler"}},
			{"never reached the PG; Pay again", func(t *testing.T, e *env, req payment.PayRequest) {
				e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1)
				_, err := e.svc.Pay(ctx, req)
				require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
			}, pay, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newForgetfulEnv(t, db)
				req := card("late-"+tc.name, 7000)
				tc.unknown(t, e, req)

				e.clock.Advance(pgKeyRetention + time.Hour)
				p, err := tc.retry(e, req)
				require.NoError(t, err)
				assert.Equal(t, payment.StateApproved, p.State)
				assert.Equal(t, 1, e.sim.Charges(req.PaymentID), "charged once")
				assert.Equal(t, 1, e.sim.Stats().Charges)
				assert.Equal(t, tc.history, e.history(t, req.PaymentID))
			})
		}
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
		assert.Equal(t, payment.RefundPending, r.State)
		p := e.get(t, "pay-x")
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Zero(t, p.Refunded)
		assert.Equal(t, int64(3000), p.RefundPending)
		assert.Equal(t, int64(4000), e.sim.Stats().CanceledAmount, "nothing sent again")
		assert.Equal(t, []string{`pay-x:refund:refund "r-x" of 3000 pending, 0 refunded here, the gateway has refunded 4000`}, e.obs.contradicted())
	})
}

// TestLateRetriesRacingChargeOnce: past the key window, many retries and a reconciler race
// to settle a payment the PG charged before its answer was lost, and one it never saw: each
// is charged exactly once and moved once.
func TestLateRetriesRacingChargeOnce(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newForgetfulEnv(t, db)
		charged, unseen := card("race-charged", 5000), card("race-unseen", 6000)
		e.sim.InjectFault(charged.PaymentID, pgsim.FaultLostResponse, 1)
		e.sim.InjectFault(unseen.PaymentID, pgsim.FaultUnavailable, 1)
		for _, req := range []payment.PayRequest{charged, unseen} {
			_, err := e.svc.Pay(ctx, req)
			require.Error(t, err)
		}
		e.clock.Advance(pgKeyRetention + time.Hour)

		rec, err := payment.NewReconciler(e.svc, payment.WithConcurrency(2))
		require.NoError(t, err)
		var wg sync.WaitGroup
		for i := range 16 {
			req := []payment.PayRequest{charged, unseen}[i%2]
			wg.Go(func() {
				p, err := e.svc.Pay(ctx, req)
				assert.NoError(t, err)
				assert.Equal(t, payment.StateApproved, p.State)
			})
		}
		wg.Go(func() {
			_, err := rec.Reconcile(ctx)
			assert.NoError(t, err)
		})
		wg.Wait()

		for _, req := range []payment.PayRequest{charged, unseen} {
			assert.Equal(t, 1, e.sim.Charges(req.PaymentID), req.PaymentID)
			assert.Equal(t, 1, e.obs.count(req.PaymentID, payment.StateApproved), req.PaymentID)
			assert.Equal(t, payment.StateApproved, e.get(t, req.PaymentID).State)
		}
		assert.Equal(t, 2, e.sim.Stats().Charges)
	})
}
