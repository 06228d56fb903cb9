package payment_test

import (
	"context"
	"errors"
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
		refusedWhileInFlight(t, e, g, req, func() (payment.Payment, error) { return e.svc.Pay(ctx, req) })
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
		refusedWhileInFlight(t, e, g, req, func() (payment.Payment, error) { return e.svc.Attempt(ctx, req) })
	})
}

// refusedWhileInFlight runs the race where inFlight (a submitter of req's payment) has its
// call held on the way to the PG by g while an Attempt of req has its own call refused: the
// Attempt must not abandon what inFlight sent, and inFlight's charge stands.
func refusedWhileInFlight(t *testing.T, e *env, g *held, req payment.PayRequest, inFlight func() (payment.Payment, error)) {
	t.Helper()
	done := make(chan struct{})
	var (
		sent    payment.Payment
		sentErr error
	)
	go func() { defer close(done); sent, sentErr = inFlight() }()
	<-g.entered // its call is on the way to the PG

	e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1) // the Attempt's call is refused
	p, err := e.svc.Attempt(context.Background(), req)
	require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
	assert.NotErrorIs(t, err, payment.ErrAbandoned, "sent by the one in flight: not the Attempt's to abandon")
	assert.Equal(t, payment.StateRequested, p.State)

	close(g.release)
	<-done
	require.NoError(t, sentErr)
	assert.Equal(t, payment.StateApproved, sent.State)
	requireChargedOnce(t, e, req.PaymentID)
}

// TestAttemptInFlightKeepsTheFirstFromAbandoning is the same race the other way round: the
// first Attempt took the payment up, and its call is refused only once a second Attempt's
// call has reached the PG (approved, its answer not recorded yet). The first Attempt must
// not abandon what the second one sent: the payment ends APPROVED, nothing given back, the
// first Attempt's error ErrGatewayUnavailable (not ErrAbandoned), the second's nil.
func TestAttemptInFlightKeepsTheFirstFromAbandoning(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		g := newOrdered()
		e := newEnv(t, db, g.wrap)
		req := card("both-ways", 5000)
		e.record(t, req)
		refusedAfterAnotherSent(t, e, g, req, func() (payment.Payment, error) { return e.svc.Attempt(ctx, req) })
	})
}

// refusedAfterAnotherSent runs the race where first (a submitter of req's payment that
// takes it up first) has its call refused by g only once an Attempt of req has had its call
// approved by the PG, its answer not recorded yet: first must not abandon what the Attempt
// sent (ErrGatewayUnavailable, not ErrAbandoned), and the Attempt's charge stands.
func refusedAfterAnotherSent(t *testing.T, e *env, g *ordered, req payment.PayRequest, first func() (payment.Payment, error)) {
	t.Helper()
	var (
		mine, other       payment.Payment
		mineErr, otherErr error
	)
	mineDone, otherDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(mineDone); mine, mineErr = first() }()
	<-g.firstEntered // took up, its call on the way
	go func() { defer close(otherDone); other, otherErr = e.svc.Attempt(context.Background(), req) }()
	<-g.secondDone // the PG approved the other call; its answer not recorded yet
	close(g.firstRelease)
	<-mineDone // the first call refused
	close(g.secondRelease)
	<-otherDone

	require.ErrorIs(t, mineErr, payment.ErrGatewayUnavailable)
	assert.NotErrorIs(t, mineErr, payment.ErrAbandoned, "the other Attempt sent it: not the first's to abandon")
	assert.NotEqual(t, payment.StateAbandoned, mine.State)
	require.NoError(t, otherErr)
	assert.Equal(t, payment.StateApproved, other.State)
	requireChargedOnce(t, e, req.PaymentID)
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

func newOrdered() *ordered {
	return &ordered{firstEntered: make(chan struct{}), firstRelease: make(chan struct{}),
		secondDone: make(chan struct{}), secondRelease: make(chan struct{})}
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
			refusedWhileInFlight(t, e, g, req, func() (payment.Payment, error) { return e.svc.AttemptRecorded(ctx, rec) })
		})
		t.Run("refused while an Attempt is in flight", func(t *testing.T) {
			g := newOrdered()
			e := newEnv(t, db, g.wrap)
			req := card("rec-second", 5000)
			rec, err := e.svc.RequestToAttempt(ctx, e.db, req)
			require.NoError(t, err)
			refusedAfterAnotherSent(t, e, g, req, func() (payment.Payment, error) { return e.svc.AttemptRecorded(ctx, rec) })
		})
		t.Run("its transaction rolled back, or another payment given: nothing sent", func(t *testing.T) {
			e := newEnv(t, db, nil)
			req := card("rec-rolled-back", 5000)
			var rec payment.Payment
			err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				var err error
				rec, err = e.svc.RequestToAttempt(ctx, tx, req)
				require.NoError(t, err)
				return errors.New("the caller's transaction fails")
			})
			require.Error(t, err)
			_, err = e.svc.AttemptRecorded(ctx, rec)
			require.ErrorIs(t, err, payment.ErrPaymentNotFound, "rolled back: never sent")

			e.record(t, req)
			forged := rec
			forged.Amount = 1
			_, err = e.svc.AttemptRecorded(ctx, forged)
			require.ErrorIs(t, err, payment.ErrPaymentIDReused, "not the payment recorded")
			assert.Zero(t, e.sim.ApproveCalls(req.PaymentID))
			assert.Equal(t, payment.StateRequested, e.get(t, req.PaymentID).State)
		})
	})
}
