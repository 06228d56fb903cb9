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

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// held is a gateway that holds each call in calls (say "approve:att-1") once: it signals
// on entered, then waits until release is closed before passing the call on.
type held struct {
	payment.Gateway
	calls   map[string]bool
	entered chan string
	release chan struct{}
	mu      sync.Mutex
}

func newHeld(calls ...string) *held {
	h := &held{calls: map[string]bool{}, entered: make(chan string, 8), release: make(chan struct{})}
	for _, c := range calls {
		h.calls[c] = true
	}
	return h
}

// wrap puts h in front of the simulator (for newEnv).
func (h *held) wrap(s *pgsim.Simulator) payment.Gateway {
	h.Gateway = s
	return h
}

func (h *held) wait(call string) {
	h.mu.Lock()
	hit := h.calls[call]
	delete(h.calls, call)
	h.mu.Unlock()
	if hit {
		h.entered <- call
		<-h.release
	}
}

func (h *held) Approve(ctx context.Context, req payment.ApproveRequest) (payment.Approval, error) {
	h.wait("approve:" + req.PaymentID)
	return h.Gateway.Approve(ctx, req)
}

func (h *held) Status(ctx context.Context, id string) (payment.GatewayPayment, error) {
	h.wait("status:" + id)
	return h.Gateway.Status(ctx, id)
}

// record records req as its own caller would, in a transaction of its own.
func (e *env) record(t *testing.T, req payment.PayRequest) {
	t.Helper()
	_, err := e.svc.Request(context.Background(), e.db, req)
	require.NoError(t, err)
}

// TestAttemptAbandons: an Attempt whose PG call was certainly not processed abandons the
// payment (ErrAbandoned, which is ErrGatewayUnavailable and errcode.ErrUnavailable); nothing
// ever sends an ABANDONED payment again: Submit, Pay and the Reconciler leave it as it is.
// An unknown outcome is not abandoned, nor is an answered call.
func TestAttemptAbandons(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		req := card("att-1", 5000)
		e.record(t, req)
		e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1)
		p, err := e.svc.Attempt(ctx, req)
		require.ErrorIs(t, err, payment.ErrAbandoned)
		assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		assert.ErrorIs(t, err, errcode.ErrUnavailable)
		assert.Equal(t, payment.StateAbandoned, p.State)
		assert.Equal(t, p, e.get(t, req.PaymentID))
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>ABANDONED:abandoned"}, e.history(t, req.PaymentID))
		assert.Equal(t, 1, e.obs.count(req.PaymentID, payment.StateAbandoned))

		for name, call := range map[string]func() (payment.Payment, error){
			"Submit":  func() (payment.Payment, error) { return e.svc.Submit(ctx, req) },
			"Pay":     func() (payment.Payment, error) { return e.svc.Pay(ctx, req) },
			"Attempt": func() (payment.Payment, error) { return e.svc.Attempt(ctx, req) },
		} {
			p, err := call()
			require.ErrorIs(t, err, payment.ErrAbandoned, name)
			assert.Equal(t, payment.StateAbandoned, p.State, name)
		}
		e.clock.Advance(time.Hour)
		report, err := testkit.Must(payment.NewReconciler(e.svc, payment.WithThreshold(0)))(t).Reconcile(ctx)
		require.NoError(t, err)
		assert.Zero(t, report.Examined)
		assert.Equal(t, 1, e.sim.ApproveCalls(req.PaymentID), "an abandoned payment is never sent again")
		assert.Zero(t, e.sim.Stats().Charges)
		mm, err := e.svc.CrossCheck(ctx)
		require.NoError(t, err)
		assert.Empty(t, mm, "an abandoned payment the PG never saw agrees with it")

		unknown := card("att-2", 5000)
		e.record(t, unknown)
		e.sim.InjectFault(unknown.PaymentID, pgsim.FaultError, 1)
		p, err = e.svc.Attempt(ctx, unknown)
		require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
		assert.ErrorIs(t, err, errcode.ErrUnavailable)
		assert.Equal(t, payment.StateUnknown, p.State, "the PG may have processed it: never abandoned")

		ok := card("att-3", 5000)
		e.record(t, ok)
		p, err = e.svc.Attempt(ctx, ok)
		require.NoError(t, err)
		assert.Equal(t, payment.StateApproved, p.State)
	})
}

// TestAbandonRacesSubmission: of an Attempt abandoning a payment and another submitter (the
// Reconciler, a client's Submit) sending it, exactly one goes ahead, whichever order their
// steps interleave in, and the PG charges it at most once.
func TestAbandonRacesSubmission(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		reconcile := func(t *testing.T, e *env) {
			_, err := testkit.Must(payment.NewReconciler(e.svc, payment.WithThreshold(0)))(t).Reconcile(ctx)
			assert.NoError(t, err)
		}

		t.Run("the reconciler sends it while the attempt's call is refused", func(t *testing.T) {
			g := newHeld("approve:race-1")
			e := newEnv(t, db, g.wrap)
			req := card("race-1", 5000)
			e.record(t, req)
			done := make(chan struct{})
			var p payment.Payment
			var err error
			go func() { defer close(done); p, err = e.svc.Attempt(ctx, req) }()
			<-g.entered
			// The attempt's call is in flight: the reconciler takes the payment up and charges it.
			reconcile(t, e)
			assert.Equal(t, payment.StateApproved, e.get(t, req.PaymentID).State)
			e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1) // the attempt's call is refused
			close(g.release)
			<-done
			require.NoError(t, err, "the attempt finds it approved, not abandoned")
			assert.Equal(t, payment.StateApproved, p.State)
			assert.Equal(t, 1, e.sim.Charges(req.PaymentID))
		})

		t.Run("the reconciler takes it up while the PG is down", func(t *testing.T) {
			g := newHeld("approve:race-2")
			e := newEnv(t, db, g.wrap)
			req := card("race-2", 5000)
			e.record(t, req)
			// Both the attempt's approval and the reconciler's are refused.
			e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 2)
			done := make(chan struct{})
			var p payment.Payment
			var err error
			go func() { defer close(done); p, err = e.svc.Attempt(ctx, req) }()
			<-g.entered
			reconcile(t, e)
			close(g.release)
			<-done
			require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
			assert.NotErrorIs(t, err, payment.ErrAbandoned, "taken up by the reconciler: not the attempt's to abandon")
			assert.Equal(t, payment.StateRequested, p.State)
			e.clock.Advance(time.Second) // past the reconciler's take-up
			reconcile(t, e)
			assert.Equal(t, payment.StateApproved, e.get(t, req.PaymentID).State)
			assert.Equal(t, 1, e.sim.Charges(req.PaymentID))
		})

		t.Run("the attempt abandons it while the reconciler looks it up", func(t *testing.T) {
			g := newHeld("status:race-3")
			e := newEnv(t, db, g.wrap)
			req := card("race-3", 5000)
			e.record(t, req)
			done := make(chan struct{})
			go func() { defer close(done); reconcile(t, e) }()
			<-g.entered // the reconciler read it REQUESTED and asks the PG about it
			e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1)
			p, err := e.svc.Attempt(ctx, req)
			require.ErrorIs(t, err, payment.ErrAbandoned)
			assert.Equal(t, payment.StateAbandoned, p.State)
			close(g.release)
			<-done
			assert.Equal(t, payment.StateAbandoned, e.get(t, req.PaymentID).State, "the reconciler does not send it")
			assert.Equal(t, 1, e.sim.ApproveCalls(req.PaymentID))
			assert.Zero(t, e.sim.Charges(req.PaymentID))
		})

		t.Run("many at once", func(t *testing.T) {
			e := newEnv(t, db, nil)
			for i := range 20 {
				req := card(fmt.Sprintf("many-%d", i), 5000)
				e.record(t, req)
				e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1)
				var wg sync.WaitGroup
				wg.Go(func() { _, _ = e.svc.Attempt(ctx, req) })
				wg.Go(func() { reconcile(t, e) })
				wg.Go(func() { _, _ = e.svc.Submit(ctx, req) })
				wg.Wait()
				p := e.get(t, req.PaymentID)
				switch p.State {
				case payment.StateAbandoned:
					assert.Zero(t, e.sim.Charges(req.PaymentID), req.PaymentID)
				case payment.StateApproved, payment.StateRequested:
					assert.LessOrEqual(t, e.sim.Charges(req.PaymentID), 1, req.PaymentID)
				default:
					t.Errorf("%s: %s", req.PaymentID, p.State)
				}
				e.clock.Advance(time.Second)
				reconcile(t, e)
				if p = e.get(t, req.PaymentID); p.State == payment.StateAbandoned {
					assert.Zero(t, e.sim.Charges(req.PaymentID), req.PaymentID)
				} else {
					assert.Equal(t, payment.StateApproved, p.State, req.PaymentID)
					assert.Equal(t, 1, e.sim.Charges(req.PaymentID), req.PaymentID)
				}
			}
		})
	})
}
