package payment_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
)

var errRollback = errors.New("the caller's work failed")

// TestRequestJoinsTheCallersTransaction: a payment recorded by Request in a caller's
// transaction commits and rolls back with it; Submit charges only what is committed, once.
func TestRequestJoinsTheCallersTransaction(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		req := card("pay-tx", 12_000)

		// Rolled back with the caller: no record, and Submit refuses to call the PG for it.
		err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			p, err := e.svc.Request(ctx, tx, req)
			require.NoError(t, err)
			assert.Equal(t, payment.StateRequested, p.State)
			if db.Dialect().Name() == dialect.MySQL { // SQLite has one connection: it would wait for tx
				_, err := e.svc.Submit(ctx, req)
				assert.ErrorIs(t, err, payment.ErrPaymentNotFound, "not committed yet: not submitted")
			}
			return errRollback
		})
		require.ErrorIs(t, err, errRollback)
		_, err = e.svc.Get(ctx, req.PaymentID)
		require.ErrorIs(t, err, payment.ErrPaymentNotFound, "rolled back with the caller")
		_, err = e.svc.Submit(ctx, req)
		require.ErrorIs(t, err, payment.ErrPaymentNotFound)
		assert.Zero(t, e.sim.ApproveCalls(req.PaymentID), "the PG is never called for a payment not on record")

		// Committed with the caller: REQUESTED, the PG not called yet; Submit charges it once.
		var recorded payment.Payment
		require.NoError(t, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			recorded, err = e.svc.Request(ctx, tx, req)
			return err
		}))
		assert.Equal(t, recorded, e.get(t, req.PaymentID))
		assert.Equal(t, []string{">REQUESTED:created"}, e.history(t, req.PaymentID))
		assert.Zero(t, e.sim.ApproveCalls(req.PaymentID))

		p, err := e.svc.Submit(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}, e.history(t, req.PaymentID))

		// Replays answer the same without a second call: Submit, Pay, and Request (in a
		// transaction or not) return the payment as it is.
		for name, replay := range map[string]func() (payment.Payment, error){
			"Submit": func() (payment.Payment, error) { return e.svc.Submit(ctx, req) },
			"Pay":    func() (payment.Payment, error) { return e.svc.Pay(ctx, req) },
			"Request": func() (payment.Payment, error) {
				var got payment.Payment
				err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) (err error) {
					got, err = e.svc.Request(ctx, tx, req)
					return err
				})
				return got, err
			},
		} {
			got, err := replay()
			require.NoError(t, err, name)
			assert.Equal(t, p, got, name)
		}
		assert.Equal(t, 1, e.sim.ApproveCalls(req.PaymentID))
		assert.Equal(t, 1, e.sim.Charges(req.PaymentID))
		// The Observer heard of both creations, the rolled-back one included (as documented).
		assert.Equal(t, 2, e.obs.count(req.PaymentID, payment.StateRequested))
	})
}

// TestRequestFailureLeavesTheCallersTransactionUsable: a refused Request (bad input, a reused
// ID) records nothing and undoes only itself; the caller's other work still commits.
func TestRequestFailureLeavesTheCallersTransactionUsable(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		testkit.Must(e.svc.Request(ctx, db, card("pay-1", 1000)))(t)

		require.NoError(t, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			reused := card("pay-1", 2000)
			_, err := e.svc.Request(ctx, tx, reused)
			assert.ErrorIs(t, err, payment.ErrPaymentIDReused)
			_, err = e.svc.Request(ctx, tx, card("pay-bad", 0))
			var ve *payment.ValidationError
			assert.ErrorAs(t, err, &ve)
			_, err = e.svc.Request(ctx, tx, card("pay-2", 3000))
			return err
		}))
		assert.Equal(t, int64(1000), e.get(t, "pay-1").Amount)
		assert.Equal(t, payment.StateRequested, e.get(t, "pay-2").State)
		_, err := e.svc.Get(ctx, "pay-bad")
		assert.ErrorIs(t, err, payment.ErrPaymentNotFound)

		// Submit refuses bad input and a request other than the recorded one, calling nothing.
		_, err = e.svc.Submit(ctx, card("pay-1", 2000))
		assert.ErrorIs(t, err, payment.ErrPaymentIDReused)
		_, err = e.svc.Submit(ctx, card("pay-1", 0))
		assert.ErrorIs(t, err, payment.ErrInvalidRequest)
		assert.Zero(t, e.sim.Stats().ApproveCalls)
	})
}

// TestRequestedNeverSubmittedIsChargedOnceByTheReconciler: the caller dies between the
// commit of its transaction and Submit; the Reconciler submits the payment, and the
// caller's late Submit finds it settled: one charge.
func TestRequestedNeverSubmittedIsChargedOnceByTheReconciler(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		req := card("pay-crash", 5000)
		require.NoError(t, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			_, err := e.svc.Request(ctx, tx, req)
			return err
		}))
		rec := testkit.Must(payment.NewReconciler(e.svc, payment.WithThreshold(0)))(t)
		rep, err := rec.Reconcile(ctx)
		require.NoError(t, err)
		assert.Equal(t, payment.ReconcileReport{Examined: 1, Settled: 1}, rep)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:reconciler"}, e.history(t, req.PaymentID))

		p, err := e.svc.Submit(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Equal(t, 1, e.sim.ApproveCalls(req.PaymentID))
		assert.Equal(t, 1, e.sim.Charges(req.PaymentID))
	})
}
