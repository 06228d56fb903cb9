package payment_test

import (
	"context"
	"sync/atomic"
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
		requireChargedOnce(t, e, req.PaymentID)
	})
}

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
		requireChargedOnce(t, e, req.PaymentID)
	})
}

// TestAttemptInFlightKeepsTheFirstFromAbandoning is the same race the other way round: the
// first Attempt took the payment up, and its call is refused only once a second Attempt's
// call has reached the PG (approved, its answer not recorded yet). The first Attempt must
// not abandon what the second one sent: the payment ends APPROVED, nothing given back, the
// first Attempt's error ErrGatewayUnavailable (not ErrAbandoned), the second's nil.
func TestAttemptInFlightKeepsTheFirstFromAbandoning(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		g := &ordered{firstEntered: make(chan struct{}), firstRelease: make(chan struct{}),
			secondDone: make(chan struct{}), secondRelease: make(chan struct{})}
		e := newEnv(t, db, g.wrap)
		req := card("both-ways", 5000)
		e.record(t, req)

		var (
			first, second       payment.Payment
			firstErr, secondErr error
		)
		firstDone, secondDone := make(chan struct{}), make(chan struct{})
		go func() { defer close(firstDone); first, firstErr = e.svc.Attempt(ctx, req) }()
		<-g.firstEntered // took up, its call on the way
		go func() { defer close(secondDone); second, secondErr = e.svc.Attempt(ctx, req) }()
		<-g.secondDone // the PG approved the second call; its answer not recorded yet
		close(g.firstRelease)
		<-firstDone // the first call refused
		close(g.secondRelease)
		<-secondDone

		require.ErrorIs(t, firstErr, payment.ErrGatewayUnavailable)
		assert.NotErrorIs(t, firstErr, payment.ErrAbandoned, "the second Attempt sent it: not the first's to abandon")
		assert.NotEqual(t, payment.StateAbandoned, first.State)
		require.NoError(t, secondErr)
		assert.Equal(t, payment.StateApproved, second.State)
		requireChargedOnce(t, e, req.PaymentID)
	})
}

// ordered is a gateway whose first Approve waits for firstRelease and is then refused
// before the PG (ErrGatewayUnavailable), and whose second is sent to the PG and then waits
// for secondRelease before it answers.
type ordered struct {
	payment.Gateway
	calls                      atomic.Int32
	firstEntered, firstRelease chan struct{}
	secondDone, secondRelease  chan struct{}
}

func (o *ordered) wrap(s *pgsim.Simulator) payment.Gateway {
	o.Gateway = s
	return o
}

func (o *ordered) Approve(ctx context.Context, req payment.ApproveRequest) (payment.Approval, error) {
	switch o.calls.Add(1) {
	case 1:
		close(o.firstEntered)
		<-o.firstRelease
		return payment.Approval{}, payment.ErrGatewayUnavailable
	case 2:
		a, err := o.Gateway.Approve(ctx, req)
		close(o.secondDone)
		<-o.secondRelease
		return a, err
	}
	return o.Gateway.Approve(ctx, req)
}

// requireChargedOnce checks the end of a race between submitters of one payment: it is
// APPROVED, charged once, its history created then approved, nothing given back.
func requireChargedOnce(t *testing.T, e *env, id string) {
	t.Helper()
	p := e.get(t, id)
	require.Equal(t, payment.StateApproved, p.State)
	assert.Zero(t, p.RefundPending)
	assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}, e.history(t, id))
	assert.Empty(t, e.refunds(t, id), "nothing given back")
	voided, err := e.svc.Voided(context.Background(), p)
	require.NoError(t, err)
	assert.False(t, voided)
	assert.Equal(t, 1, e.sim.Charges(id))
}

// TestAttemptRecorded: the caller that recorded the payment with RequestToAttempt sends it
// with AttemptRecorded. A PG it certainly did not reach makes it abandon the payment, as
// Attempt does; a call another submitter has on the way to the PG, before or after its own,
// keeps it from abandoning, in either order, and that charge stands.
func TestAttemptRecorded(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		t.Run("unreached, alone: abandoned", func(t *testing.T) {
			e := newEnv(t, db, nil)
			req := card("rec-alone", 5000)
			rec, err := e.svc.RequestToAttempt(ctx, e.db, req)
			require.NoError(t, err)
			e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1)
			p, err := e.svc.AttemptRecorded(ctx, rec)
			require.ErrorIs(t, err, payment.ErrAbandoned)
			assert.Equal(t, payment.StateAbandoned, p.State)
			assert.Equal(t, payment.StateAbandoned, e.get(t, req.PaymentID).State)
			assert.Zero(t, e.sim.Charges(req.PaymentID))
		})
		t.Run("an Attempt refused while it is in flight", func(t *testing.T) {
			g := newHeld("approve:rec-first")
			e := newEnv(t, db, g.wrap)
			req := card("rec-first", 5000)
			rec, err := e.svc.RequestToAttempt(ctx, e.db, req)
			require.NoError(t, err)
			done := make(chan struct{})
			var sent payment.Payment
			var sentErr error
			go func() { defer close(done); sent, sentErr = e.svc.AttemptRecorded(ctx, rec) }()
			<-g.entered // its call is on the way to the PG
			e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1)
			_, err = e.svc.Attempt(ctx, req)
			require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
			assert.NotErrorIs(t, err, payment.ErrAbandoned)
			close(g.release)
			<-done
			require.NoError(t, sentErr)
			assert.Equal(t, payment.StateApproved, sent.State)
			requireChargedOnce(t, e, req.PaymentID)
		})
		t.Run("refused while an Attempt is in flight", func(t *testing.T) {
			g := &ordered{firstEntered: make(chan struct{}), firstRelease: make(chan struct{}),
				secondDone: make(chan struct{}), secondRelease: make(chan struct{})}
			e := newEnv(t, db, g.wrap)
			req := card("rec-second", 5000)
			rec, err := e.svc.RequestToAttempt(ctx, e.db, req)
			require.NoError(t, err)
			var (
				mine, other       payment.Payment
				mineErr, otherErr error
			)
			mineDone, otherDone := make(chan struct{}), make(chan struct{})
			go func() { defer close(mineDone); mine, mineErr = e.svc.AttemptRecorded(ctx, rec) }()
			<-g.firstEntered
			go func() { defer close(otherDone); other, otherErr = e.svc.Attempt(ctx, req) }()
			<-g.secondDone // the PG approved the other call; its answer not recorded yet
			close(g.firstRelease)
			<-mineDone
			close(g.secondRelease)
			<-otherDone
			require.ErrorIs(t, mineErr, payment.ErrGatewayUnavailable)
			assert.NotErrorIs(t, mineErr, payment.ErrAbandoned, "the other Attempt sent it")
			assert.NotEqual(t, payment.StateAbandoned, mine.State)
			require.NoError(t, otherErr)
			assert.Equal(t, payment.StateApproved, other.State)
			requireChargedOnce(t, e, req.PaymentID)
		})
	})
}
