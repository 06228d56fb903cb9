package payment_test

import (
	"context"
	"strconv"
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

// underReview pays id (declined by the PG when declined), has the PG overturn its answer and
// delivers the PG's genuine webhook: the payment is in REVIEW.
func (e *env) underReview(t *testing.T, id string, declined bool) {
	t.Helper()
	req := card(id, 5000)
	if declined {
		req.Token = pgsim.TokenDecline
	}
	_, err := e.svc.Pay(context.Background(), req)
	if declined {
		require.ErrorIs(t, err, payment.ErrDeclined)
	} else {
		require.NoError(t, err)
	}
	require.NoError(t, e.sim.Overturn(id))
	e.deliverWebhook(t, id)
	require.Equal(t, payment.StateReview, e.get(t, id).State)
}

// refunds returns the refunds of a payment as "id:state:amount".
func (e *env) refunds(t *testing.T, id string) []string {
	t.Helper()
	rs, err := e.svc.Refunds(context.Background(), id)
	require.NoError(t, err)
	var out []string
	for _, r := range rs {
		out = append(out, r.ID+":"+string(r.State)+":"+strconv.FormatInt(r.Amount, 10))
	}
	return out
}

// TestResolveReview: ResolveReview gives back what the PG holds of a payment in REVIEW, by the
// PG's own record asked again, and leaves the record agreeing with the PG (CrossCheck clean).
func TestResolveReview(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()

		t.Run("approved here, declined there: nothing to give back", func(t *testing.T) {
			e := newEnv(t, db, nil)
			e.underReview(t, "rv-reversed", false)
			p, err := e.svc.ResolveReview(ctx, "rv-reversed")
			require.NoError(t, err)
			assert.Equal(t, payment.StateDeclined, p.State)
			assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway", "APPROVED>REVIEW:webhook", "REVIEW>DECLINED:resolved"},
				e.history(t, "rv-reversed"))
			assert.Empty(t, e.refunds(t, "rv-reversed"))
			e.noMismatch(t, "rv-reversed")

			again, err := e.svc.ResolveReview(ctx, "rv-reversed")
			require.NoError(t, err, "idempotent")
			assert.Equal(t, p, again)
		})

		t.Run("declined here, approved there: the charge is refunded", func(t *testing.T) {
			e := newEnv(t, db, nil)
			e.underReview(t, "rv-charged", true)
			require.Equal(t, 1, e.sim.Charges("rv-charged"), "the PG holds the money of a payment the record declined")
			p, err := e.svc.ResolveReview(ctx, "rv-charged")
			require.NoError(t, err)
			assert.Equal(t, payment.StateRefunded, p.State)
			assert.Equal(t, int64(5000), p.Refunded)
			assert.Zero(t, p.RefundPending)
			assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>DECLINED:gateway", "DECLINED>REVIEW:webhook",
				"REVIEW>APPROVED:resolved", "APPROVED>REFUNDED:refund"}, e.history(t, "rv-charged"))
			assert.Equal(t, []string{"review-rv-charged:SUCCEEDED:5000"}, e.refunds(t, "rv-charged"))
			st, err := e.sim.Status(ctx, "rv-charged")
			require.NoError(t, err)
			assert.Equal(t, int64(5000), st.Canceled, "refunded once at the PG")
			e.noMismatch(t, "rv-charged")
		})

		for _, c := range []struct {
			name, id string
			console  int64
			history  []string
			refunds  []string
		}{
			{"partly refunded in the PG's console: the rest is given back", "rv-console", 2000,
				[]string{"REVIEW>PARTIALLY_REFUNDED:resolved", "PARTIALLY_REFUNDED>REFUNDED:refund"},
				[]string{"console-rv-console:SUCCEEDED:2000", "review-rv-console:SUCCEEDED:3000"}},
			{"all refunded in the PG's console: recorded, nothing sent", "rv-allback", 5000,
				[]string{"REVIEW>REFUNDED:resolved"},
				[]string{"console-rv-allback:SUCCEEDED:5000"}},
		} {
			t.Run(c.name, func(t *testing.T) {
				e := newEnv(t, db, nil)
				e.underReview(t, c.id, true)
				_, err := e.sim.Cancel(ctx, payment.CancelRequest{CancelID: "by-hand", PaymentID: c.id, Amount: c.console, Reason: "by hand"})
				require.NoError(t, err)
				p, err := e.svc.ResolveReview(ctx, c.id)
				require.NoError(t, err)
				assert.Equal(t, payment.StateRefunded, p.State)
				assert.Equal(t, int64(5000), p.Refunded)
				assert.Equal(t, append([]string{">REQUESTED:created", "REQUESTED>DECLINED:gateway", "DECLINED>REVIEW:webhook"}, c.history...),
					e.history(t, c.id))
				assert.ElementsMatch(t, c.refunds, e.refunds(t, c.id))
				e.noMismatch(t, c.id)
			})
		}

		t.Run("the PG unreachable: nothing changes, and later it resolves", func(t *testing.T) {
			e := newEnv(t, db, nil)
			e.underReview(t, "rv-down", true)
			e.sim.SetFault(pgsim.FaultUnavailable)
			p, err := e.svc.ResolveReview(ctx, "rv-down")
			require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
			assert.ErrorIs(t, err, errcode.ErrUnavailable)
			assert.Equal(t, payment.StateReview, p.State)
			assert.Equal(t, payment.StateReview, e.get(t, "rv-down").State)
			assert.Len(t, e.history(t, "rv-down"), 3, "no transition")

			e.sim.SetFault(pgsim.FaultNone)
			p, err = e.svc.ResolveReview(ctx, "rv-down")
			require.NoError(t, err)
			assert.Equal(t, payment.StateRefunded, p.State)
		})

		t.Run("the refund unconfirmed: recorded, completed by the next call", func(t *testing.T) {
			e := newEnv(t, db, nil)
			e.underReview(t, "rv-pending", true)
			e.sim.InjectFault("review-rv-pending", pgsim.FaultLostResponse, 1)
			p, err := e.svc.ResolveReview(ctx, "rv-pending")
			require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
			assert.Equal(t, payment.StateApproved, p.State, "resolved; the refund is still with the PG")
			assert.Equal(t, int64(5000), p.RefundPending)
			assert.Equal(t, []string{"review-rv-pending:PENDING:5000"}, e.refunds(t, "rv-pending"))

			p, err = e.svc.ResolveReview(ctx, "rv-pending")
			require.NoError(t, err)
			assert.Equal(t, payment.StateRefunded, p.State)
			assert.Equal(t, []string{"review-rv-pending:SUCCEEDED:5000"}, e.refunds(t, "rv-pending"))
			st, err := e.sim.Status(ctx, "rv-pending")
			require.NoError(t, err)
			assert.Equal(t, int64(5000), st.Canceled, "the lost answer's refund made once")
		})

		t.Run("the refund refused unprocessed: the Reconciler completes it", func(t *testing.T) {
			e := newEnv(t, db, nil)
			e.underReview(t, "rv-later", true)
			e.sim.InjectFault("review-rv-later", pgsim.FaultUnavailable, 1)
			p, err := e.svc.ResolveReview(ctx, "rv-later")
			require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
			assert.Equal(t, payment.StateApproved, p.State)
			assert.Equal(t, []string{"review-rv-later:PENDING:5000"}, e.refunds(t, "rv-later"))

			e.clock.Advance(2 * time.Minute)
			_, err = testkit.Must(payment.NewReconciler(e.svc))(t).Reconcile(ctx)
			require.NoError(t, err)
			assert.Equal(t, payment.StateRefunded, e.get(t, "rv-later").State)
			assert.Equal(t, []string{"review-rv-later:SUCCEEDED:5000"}, e.refunds(t, "rv-later"))
			e.noMismatch(t, "rv-later")
		})

		t.Run("concurrent resolutions give back once", func(t *testing.T) {
			e := newEnv(t, db, nil)
			e.underReview(t, "rv-race", true)
			var wg sync.WaitGroup
			errs := make([]error, 8)
			for i := range errs {
				wg.Go(func() { _, errs[i] = e.svc.ResolveReview(ctx, "rv-race") })
			}
			wg.Wait()
			for _, err := range errs {
				require.NoError(t, err)
			}
			p, err := e.svc.ResolveReview(ctx, "rv-race")
			require.NoError(t, err)
			assert.Equal(t, payment.StateRefunded, p.State)
			assert.Equal(t, []string{"review-rv-race:SUCCEEDED:5000"}, e.refunds(t, "rv-race"))
			assert.Equal(t, 1, e.obs.count("rv-race", payment.StateApproved))
			st, err := e.sim.Status(ctx, "rv-race")
			require.NoError(t, err)
			assert.Equal(t, int64(5000), st.Canceled)
		})

		t.Run("refused: not under review, unknown, invalid", func(t *testing.T) {
			e := newEnv(t, db, nil)
			_, err := e.svc.Pay(ctx, card("rv-fine", 5000))
			require.NoError(t, err)
			p, err := e.svc.ResolveReview(ctx, "rv-fine")
			require.ErrorIs(t, err, payment.ErrNotUnderReview)
			assert.Equal(t, errcode.Conflict, errcode.CodeOf(err))
			assert.Equal(t, payment.StateApproved, p.State)
			assert.Len(t, e.history(t, "rv-fine"), 2)
			_, err = e.svc.ResolveReview(ctx, "rv-nothing")
			assert.ErrorIs(t, err, payment.ErrPaymentNotFound)
			_, err = e.svc.ResolveReview(ctx, "")
			assert.ErrorIs(t, err, payment.ErrInvalidRequest)
		})
	})
}

// noMismatch checks that CrossCheck finds the record of payment id agreeing with the PG.
func (e *env) noMismatch(t *testing.T, id string) {
	t.Helper()
	ms, err := e.svc.CrossCheck(context.Background())
	require.NoError(t, err)
	for _, m := range ms {
		assert.NotEqual(t, id, m.Payment.ID, m.Detail)
	}
}

// TestResolveReviewContradictedAgain: a review resolved to DECLINED (the PG held nothing)
// whose PG then holds the charge after all (it reversed its answer again) cannot go to
// REVIEW a second time. The PG's genuine webhook is then a conflict the Observer is told
// of, not a storage error (a 500 the PG would redeliver for ever), and ResolveReview, asked
// again, says the PG's record no longer agrees (ErrUnresolvable) instead of reporting the
// payment settled while the PG holds its money.
func TestResolveReviewContradictedAgain(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		e.underReview(t, "rv-again", false)
		p, err := e.svc.ResolveReview(ctx, "rv-again")
		require.NoError(t, err)
		require.Equal(t, payment.StateDeclined, p.State)

		require.NoError(t, e.sim.Overturn("rv-again")) // the PG holds the charge after all
		body, sig := e.webhook(t, "rv-again")
		err = e.svc.HandleWebhook(ctx, body, sig)
		require.ErrorIs(t, err, payment.ErrUnresolvable)
		assert.Equal(t, errcode.Conflict, errcode.CodeOf(err))
		assert.Equal(t, payment.StateDeclined, e.get(t, "rv-again").State)
		assert.Len(t, e.obs.contradicted(), 2, "the first review, and this one")

		p, err = e.svc.ResolveReview(ctx, "rv-again")
		require.ErrorIs(t, err, payment.ErrUnresolvable)
		assert.Equal(t, errcode.Conflict, errcode.CodeOf(err))
		assert.Equal(t, payment.StateDeclined, p.State)
		assert.Empty(t, e.refunds(t, "rv-again"))
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway", "APPROVED>REVIEW:webhook", "REVIEW>DECLINED:resolved"},
			e.history(t, "rv-again"))
	})
}

// racingPG is the simulator, doing before (once) just before it gets the refund with the ID
// race: what a person does in the PG's console, or the PG's own reversal, while the give-back
// of a resolved review is on its way.
type racingPG struct {
	*pgsim.Simulator
	race   string
	before func()
	once   sync.Once
}

func (g *racingPG) Cancel(ctx context.Context, req payment.CancelRequest) (payment.Cancellation, error) {
	if req.CancelID == g.race {
		g.once.Do(g.before)
	}
	return g.Simulator.Cancel(ctx, req)
}

// TestResolveReviewGiveBackRefused: the PG refuses the give-back of a resolved review because
// its record changed after it was read. Refunded in part in its console meanwhile (the
// give-back exceeds what is left), the PG's record is taken again (the console refund
// recorded, the rest given back under a refund of its own), not left APPROVED with the money
// held and every later call refused for ever. Reversed meanwhile (it holds nothing: the
// record, APPROVED, cannot go back to a state it left), it is ErrUnresolvable, a conflict for
// a person, not a decline.
func TestResolveReviewGiveBackRefused(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()

		t.Run("refunded in part at the PG meanwhile: the rest is given back", func(t *testing.T) {
			var e *env
			e = newEnv(t, db, func(s *pgsim.Simulator) payment.Gateway {
				return &racingPG{Simulator: s, race: "review-rv-meanwhile", before: func() {
					_, err := e.sim.Cancel(ctx, payment.CancelRequest{CancelID: "by-hand", PaymentID: "rv-meanwhile", Amount: 1000, Reason: "by hand"})
					require.NoError(t, err)
				}}
			})
			e.underReview(t, "rv-meanwhile", true)
			p, err := e.svc.ResolveReview(ctx, "rv-meanwhile")
			require.NoError(t, err)
			assert.Equal(t, payment.StateRefunded, p.State)
			assert.Equal(t, int64(5000), p.Refunded)
			assert.Zero(t, p.RefundPending)
			assert.ElementsMatch(t, []string{"review-rv-meanwhile:FAILED:5000", "console2-rv-meanwhile:SUCCEEDED:1000",
				"review2-rv-meanwhile:SUCCEEDED:4000"}, e.refunds(t, "rv-meanwhile"))
			assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>DECLINED:gateway", "DECLINED>REVIEW:webhook",
				"REVIEW>APPROVED:resolved", "APPROVED>PARTIALLY_REFUNDED:resolved", "PARTIALLY_REFUNDED>REFUNDED:refund"},
				e.history(t, "rv-meanwhile"))
			st, err := e.sim.Status(ctx, "rv-meanwhile")
			require.NoError(t, err)
			assert.Equal(t, int64(5000), st.Canceled, "all of it back, once")
			e.noMismatch(t, "rv-meanwhile")

			again, err := e.svc.ResolveReview(ctx, "rv-meanwhile")
			require.NoError(t, err, "idempotent")
			assert.Equal(t, p.State, again.State)
			assert.Len(t, e.refunds(t, "rv-meanwhile"), 3)
		})

		t.Run("reversed at the PG meanwhile: a conflict for a person", func(t *testing.T) {
			var e *env
			e = newEnv(t, db, func(s *pgsim.Simulator) payment.Gateway {
				return &racingPG{Simulator: s, race: "review-rv-reversed", before: func() {
					require.NoError(t, e.sim.Overturn("rv-reversed"))
				}}
			})
			e.underReview(t, "rv-reversed", true)
			for range 2 {
				p, err := e.svc.ResolveReview(ctx, "rv-reversed")
				require.ErrorIs(t, err, payment.ErrUnresolvable)
				assert.Equal(t, errcode.Conflict, errcode.CodeOf(err))
				assert.Equal(t, payment.StateApproved, p.State)
				assert.Zero(t, p.RefundPending)
			}
			assert.Equal(t, []string{"review-rv-reversed:FAILED:5000"}, e.refunds(t, "rv-reversed"))
		})
	})
}
