package payment_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// refundFaulted pays id (5,000 won, approved) and asks for a refund of 2,000 under refundID
// whose call to the PG meets fault once, and returns the refund's error.
func (e *env) refundFaulted(t *testing.T, id, refundID string, fault pgsim.Fault) error {
	t.Helper()
	ctx := context.Background()
	_, err := e.svc.Pay(ctx, card(id, 5000))
	require.NoError(t, err)
	e.sim.InjectFault(refundID, fault, 1)
	_, err = e.svc.Refund(ctx, refund(refundID, id, 2000))
	return err
}

// reviewWithRefundPending pays id (5,000 won, approved), asks for a refund of 2,000 under
// refundID whose call to the PG fails with fault (FaultUnavailable: never made;
// FaultLostResponse: made, its answer lost), so the refund stays PENDING, then has the PG
// reverse its approval and delivers its genuine webhook: the payment is in REVIEW with the
// refund still pending.
func (e *env) reviewWithRefundPending(t *testing.T, id, refundID string, fault pgsim.Fault) {
	t.Helper()
	require.Error(t, e.refundFaulted(t, id, refundID, fault))
	require.NoError(t, e.sim.Overturn(id))
	e.deliverWebhook(t, id)
	p := e.get(t, id)
	require.Equal(t, payment.StateReview, p.State)
	require.Equal(t, int64(2000), p.RefundPending)
	require.Equal(t, []string{refundID + ":PENDING:2000"}, e.refunds(t, id))
}

// TestResolveReviewWithARefundPending: a payment goes to REVIEW (the PG reversed its
// approval) while a refund of it is still PENDING (its call failed, or its answer was lost).
// ResolveReview must not refuse it for ever with ErrRefundInProgress: it first settles the
// pending refund from the PG's own record of the payment (as the Reconciler does), never
// sending a refund the PG made, then takes the record as usual. Past the key window too,
// and whether or not a Reconciler pass came first.
func TestResolveReviewWithARefundPending(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		head := []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway", "APPROVED>REVIEW:webhook"}

		t.Run("reversed at the PG, the refund never made: it fails, the review resolves DECLINED", func(t *testing.T) {
			e := newEnv(t, db, nil)
			e.reviewWithRefundPending(t, "rp-never", "r-rp-never", pgsim.FaultUnavailable)
			e.clock.Advance(2 * time.Hour) // past the key window: a retry of the refund cannot replay it

			p, err := e.svc.ResolveReview(ctx, "rp-never")
			require.NoError(t, err)
			assert.Equal(t, payment.StateDeclined, p.State)
			assert.Zero(t, p.Refunded)
			assert.Zero(t, p.RefundPending)
			assert.Equal(t, []string{"r-rp-never:FAILED:2000"}, e.refunds(t, "rp-never"))
			assert.Equal(t, append(head, "REVIEW>DECLINED:resolved"), e.history(t, "rp-never"))
			st, err := e.sim.Status(ctx, "rp-never")
			require.NoError(t, err)
			assert.Zero(t, st.Canceled, "nothing refunded at the PG")
			assert.Zero(t, e.sim.Stats().Cancels)

			again, err := e.svc.ResolveReview(ctx, "rp-never")
			require.NoError(t, err, "idempotent")
			assert.Equal(t, p, again)
		})

		t.Run("reversed at the PG, the refund never made: the Reconciler settles it, then the review resolves", func(t *testing.T) {
			e := newEnv(t, db, nil)
			e.reviewWithRefundPending(t, "rp-rec", "r-rp-rec", pgsim.FaultUnavailable)
			e.clock.Advance(2 * time.Hour)

			_, err := testkit.Must(payment.NewReconciler(e.svc))(t).Reconcile(ctx)
			require.NoError(t, err)
			assert.Equal(t, []string{"r-rp-rec:FAILED:2000"}, e.refunds(t, "rp-rec"), "settled from the PG's record")
			p := e.get(t, "rp-rec")
			assert.Equal(t, payment.StateReview, p.State, "a person decides")
			assert.Zero(t, p.RefundPending)

			p, err = e.svc.ResolveReview(ctx, "rp-rec")
			require.NoError(t, err)
			assert.Equal(t, payment.StateDeclined, p.State)
			assert.Equal(t, append(head, "REVIEW>DECLINED:resolved"), e.history(t, "rp-rec"))
			assert.Zero(t, e.sim.Stats().Cancels)
		})

		t.Run("reversed and restored at the PG, the refund's answer lost: recorded once, the rest given back", func(t *testing.T) {
			e := newEnv(t, db, nil)
			e.reviewWithRefundPending(t, "rp-back", "r-rp-back", pgsim.FaultLostResponse)
			require.NoError(t, e.sim.Overturn("rp-back")) // approved again, with the refund made

			p, err := e.svc.ResolveReview(ctx, "rp-back")
			require.NoError(t, err)
			assert.Equal(t, payment.StateRefunded, p.State)
			assert.Equal(t, int64(5000), p.Refunded)
			assert.Zero(t, p.RefundPending)
			assert.ElementsMatch(t, []string{"r-rp-back:SUCCEEDED:2000", "review-rp-back:SUCCEEDED:3000"}, e.refunds(t, "rp-back"))
			assert.Equal(t, append(head, "REVIEW>PARTIALLY_REFUNDED:resolved", "PARTIALLY_REFUNDED>REFUNDED:refund"),
				e.history(t, "rp-back"))
			st, err := e.sim.Status(ctx, "rp-back")
			require.NoError(t, err)
			assert.Equal(t, int64(5000), st.Canceled, "all of it back, nothing twice")
			assert.Equal(t, 2, e.sim.Stats().Cancels, "the lost refund made once, the give-back once")
			e.noMismatch(t, "rp-back")
		})

		t.Run("reversed at the PG after making the refund: the refund recorded, the rest for a person", func(t *testing.T) {
			e := newEnv(t, db, nil)
			e.reviewWithRefundPending(t, "rp-made", "r-rp-made", pgsim.FaultLostResponse)
			e.clock.Advance(2 * time.Hour)

			p, err := e.svc.ResolveReview(ctx, "rp-made")
			require.ErrorIs(t, err, payment.ErrUnresolvable, "the PG has it declined with 2,000 refunded")
			assert.Equal(t, errcode.Conflict, errcode.CodeOf(err))
			assert.Equal(t, payment.StateReview, p.State)
			assert.Equal(t, int64(2000), p.Refunded)
			assert.Zero(t, p.RefundPending)
			assert.Equal(t, []string{"r-rp-made:SUCCEEDED:2000"}, e.refunds(t, "rp-made"))
			assert.Equal(t, head, e.history(t, "rp-made"))
			st, err := e.sim.Status(ctx, "rp-made")
			require.NoError(t, err)
			assert.Equal(t, int64(2000), st.Canceled, "refunded once")
			assert.Equal(t, 1, e.sim.Stats().Cancels)
		})
	})
}

// TestResolveReviewUnlistedOrRefundedAtThePG: the PG's record of a payment it reversed is
// taken by ResolveReview only when it tells what happened to every refund:
//   - a PG that reports only its refunded total, not its refunds, says nothing of a refund
//     pending here (its reversal may have cleared the total): the refund stays PENDING, its
//     amount reserved, nothing sent, and the payment in REVIEW for a person;
//   - a PG that has the payment declined and refunds of it all the same (made in its
//     console before it reversed the approval) is ErrUnresolvable, not DECLINED with
//     nothing refunded: the payment stays in REVIEW for a person.
func TestResolveReviewUnlistedOrRefundedAtThePG(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		t.Run("unlisted", func(t *testing.T) {
			e := lateEnv(t, db, func(status func() (payment.GatewayPayment, error)) (payment.GatewayPayment, error) {
				st, err := status()
				st.Cancels = nil
				return st, err
			})
			e.reviewWithRefundPending(t, "rp-unlisted", "r-rp-unlisted", pgsim.FaultUnavailable)
			e.clock.Advance(2 * time.Hour)

			_, err := e.svc.ResolveReview(ctx, "rp-unlisted")
			require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
			p := e.get(t, "rp-unlisted")
			assert.Equal(t, payment.StateReview, p.State)
			assert.Equal(t, int64(2000), p.RefundPending)
			assert.Equal(t, []string{"r-rp-unlisted:PENDING:2000"}, e.refunds(t, "rp-unlisted"))
			assert.Zero(t, e.sim.Stats().Cancels, "nothing sent")
		})
		t.Run("refunded at the PG", func(t *testing.T) {
			e := newEnv(t, db, nil)
			_, err := e.svc.Pay(ctx, card("rp-console", 5000))
			require.NoError(t, err)
			_, err = e.sim.Cancel(ctx, payment.CancelRequest{CancelID: "console-1", PaymentID: "rp-console", Amount: 1000})
			require.NoError(t, err)
			require.NoError(t, e.sim.Overturn("rp-console"))
			e.deliverWebhook(t, "rp-console")
			require.Equal(t, payment.StateReview, e.get(t, "rp-console").State)

			_, err = e.svc.ResolveReview(ctx, "rp-console")
			require.ErrorIs(t, err, payment.ErrUnresolvable)
			p := e.get(t, "rp-console")
			assert.Equal(t, payment.StateReview, p.State)
			assert.Zero(t, p.Refunded)
			assert.Empty(t, e.refunds(t, "rp-console"))
		})
	})
}

// TestResolveReviewWithARefundPendingCut: ResolveReview of a reversed payment whose refund
// the PG never made (the first case of TestResolveReviewWithARefundPending), with its
// database connection cut at each statement it sends in turn (the reads, the refund's
// settlement and the review's take, their COMMITs), before the statement reaches the
// server and after it answered. The call fails as the database being unavailable, never
// with a business answer; the caller's retry (or the Reconciler, then the retry) leaves
// the exact end state: the refund FAILED once, the payment DECLINED with nothing refunded,
// nothing refunded at the PG.
func TestResolveReviewWithARefundPendingCut(t *testing.T) {
	db, linked, link := testenv.LinkedMySQL(t)
	require.NoError(t, payment.CreateSchema(context.Background(), db))
	ctx := context.Background()
	resolve := func(t *testing.T, id string, match func(string) bool, after bool) (*env, payment.Payment, []string, []string, error) {
		t.Helper()
		e := newEnv(t, linked, nil)
		e.reviewWithRefundPending(t, id, "r-"+id, pgsim.FaultUnavailable)
		e.clock.Advance(2 * time.Hour)
		link.Arm(match, after)
		p, err := e.svc.ResolveReview(ctx, id)
		cut, seen := link.Disarm()
		return e, p, cut, seen, err
	}
	exact := func(t *testing.T, e *env, id string) {
		t.Helper()
		p := e.get(t, id)
		assert.Equal(t, payment.StateDeclined, p.State)
		assert.Zero(t, p.Refunded)
		assert.Zero(t, p.RefundPending)
		assert.Equal(t, []string{"r-" + id + ":FAILED:2000"}, e.refunds(t, id))
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway", "APPROVED>REVIEW:webhook", "REVIEW>DECLINED:resolved"},
			e.history(t, id))
		assert.Zero(t, e.sim.Stats().Cancels, "nothing refunded at the PG")
	}
	e, _, _, statements, err := resolve(t, "rpc-clean", nil, false)
	require.NoError(t, err)
	exact(t, e, "rpc-clean")
	require.Contains(t, statements, "COMMIT")
	for _, recovery := range []string{"retry", "reconciler"} {
		for _, p := range testenv.CutPoints(statements, nil) {
			after, n := p.After, p.N
			t.Run(recovery+"/"+p.String(), func(t *testing.T) {
				id := fmt.Sprintf("rpc-%s-%t-%d", recovery, after, n)
				e, got, cut, _, err := resolve(t, id, p.Match(), after)
				e.recoverReviewCut(t, id, recovery, got, cut, err, true, func() { exact(t, e, id) })
			})
		}
	}
}
