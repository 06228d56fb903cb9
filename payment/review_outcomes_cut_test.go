package payment_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
)

// reviewOutcome is a payment in REVIEW (made by setup on a fresh env) and the exact end
// state ResolveReview leaves it in (exact).
type reviewOutcome struct {
	name  string
	setup func(t *testing.T, e *env, id string)
	exact func(t *testing.T, e *env, id string)
}

// reviewOutcomes: the three ways ResolveReview closes a review that TestResolveReviewCut
// does not take: nothing to give back (the PG has it declined: DECLINED), all of it
// refunded at the PG before (REFUNDED, the PG's refund recorded, nothing sent), and all
// of it given back (APPROVED with the give-back recorded, then sent: REFUNDED).
func reviewOutcomes() []reviewOutcome {
	ctx := context.Background()
	pg := func(t *testing.T, e *env, id string) payment.GatewayPayment {
		t.Helper()
		return testkit.Must(e.sim.Status(ctx, id))(t)
	}
	return []reviewOutcome{
		{"nothing held", func(t *testing.T, e *env, id string) {
			e.underReview(t, id, false)
		}, func(t *testing.T, e *env, id string) {
			p := e.get(t, id)
			assert.Equal(t, payment.StateDeclined, p.State)
			assert.Zero(t, p.Refunded)
			assert.Zero(t, p.RefundPending)
			assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway", "APPROVED>REVIEW:webhook", "REVIEW>DECLINED:resolved"},
				e.history(t, id))
			assert.Empty(t, e.refunds(t, id))
			st := pg(t, e, id)
			assert.Equal(t, payment.GatewayDeclined, st.State)
			assert.Zero(t, st.Canceled, "nothing refunded at the PG")
			e.noMismatch(t, id)
		}},
		{"refunded at the PG", func(t *testing.T, e *env, id string) {
			e.underReview(t, id, true)
			_, err := e.sim.Cancel(ctx, payment.CancelRequest{CancelID: "by-hand-" + id, PaymentID: id, Amount: 5000, Reason: "by hand"})
			require.NoError(t, err)
		}, func(t *testing.T, e *env, id string) {
			p := e.get(t, id)
			assert.Equal(t, payment.StateRefunded, p.State)
			assert.Equal(t, int64(5000), p.Refunded)
			assert.Zero(t, p.RefundPending)
			assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>DECLINED:gateway", "DECLINED>REVIEW:webhook", "REVIEW>REFUNDED:resolved"},
				e.history(t, id))
			assert.Equal(t, []string{"console-" + id + ":SUCCEEDED:5000"}, e.refunds(t, id))
			assert.Equal(t, int64(5000), pg(t, e, id).Canceled, "refunded once at the PG, by hand: nothing sent")
			assert.Equal(t, 1, e.sim.Charges(id))
			e.noMismatch(t, id)
		}},
		{"given back", func(t *testing.T, e *env, id string) {
			e.underReview(t, id, true)
		}, func(t *testing.T, e *env, id string) {
			p := e.get(t, id)
			assert.Equal(t, payment.StateRefunded, p.State)
			assert.Equal(t, int64(5000), p.Refunded)
			assert.Zero(t, p.RefundPending)
			assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>DECLINED:gateway", "DECLINED>REVIEW:webhook",
				"REVIEW>APPROVED:resolved", "APPROVED>REFUNDED:refund"}, e.history(t, id))
			assert.Equal(t, []string{"review-" + id + ":SUCCEEDED:5000"}, e.refunds(t, id))
			assert.Equal(t, int64(5000), pg(t, e, id).Canceled, "given back once at the PG")
			assert.Equal(t, 1, e.sim.Charges(id))
			e.noMismatch(t, id)
		}},
	}
}

// TestResolveReviewOutcomesCut: an operator's ResolveReview of each of reviewOutcomes, its
// database connection cut at each of its statements in turn (the reads, the transaction
// taking the PG's record and its COMMIT, the give-back's settlement and its COMMIT, the
// read back): before the statement reaches the server and after the server answered it.
// The call fails as the database being unavailable, or answers the payment as it is
// stored. Then production's recovery — the operator's retry, or the Reconciler alone
// (the operator never comes back: a give-back recorded is sent, nothing else moves) and
// then the retry — leaves the exact end state, money given back once, and the retry
// answers the payment as it is stored; a further call answers the same. The Observer is
// told of each transition and settled refund once, a COMMIT's lost answer notwithstanding.
func TestResolveReviewOutcomesCut(t *testing.T) {
	_, linked, link := testenv.LinkedMySQL(t)
	require.NoError(t, payment.CreateSchema(context.Background(), linked))
	ctx := context.Background()
	for i, c := range reviewOutcomes() {
		t.Run(c.name, func(t *testing.T) {
			resolve := func(t *testing.T, id string, match func(string) bool, after bool) (*env, payment.Payment, []string, []string, error) {
				t.Helper()
				e := newEnv(t, linked, nil)
				c.setup(t, e, id)
				link.Arm(match, after)
				p, err := e.svc.ResolveReview(ctx, id)
				cut, seen := link.Disarm()
				return e, p, cut, seen, err
			}
			clean := fmt.Sprintf("rvo%d-clean", i)
			e, p, _, statements, err := resolve(t, clean, nil, false)
			require.NoError(t, err)
			assert.Equal(t, e.get(t, clean), p)
			c.exact(t, e, clean)
			t.Logf("ResolveReview sends %d statements: %q", len(statements), statements)
			require.Contains(t, statements, "COMMIT")

			for _, recovery := range []string{"retry", "reconciler"} {
				for _, p := range testenv.CutPoints(statements, nil) {
					after, n := p.After, p.N
					t.Run(recovery+"/"+p.String(), func(t *testing.T) {
						id := fmt.Sprintf("rvo%d-%s-%t-%d", i, recovery, after, n)
						e, got, cut, _, err := resolve(t, id, p.Match(), after)
						e.recoverReviewCut(t, id, recovery, got, cut, err, true, func() { c.exact(t, e, id) })
					})
				}
			}
		})
	}
}

// recoverReviewCrash kills server at the COMMIT match accepts while ResolveReview resolves
// payment id (the call, and its retry while the server is down, failing as the database
// unavailable), starts it again, lets the Reconciler run past its minimum age, and
// resolves the review again: the answer is the payment as recorded.
func (e *env) recoverReviewCrash(t *testing.T, id string, server *testenv.Own, link *testenv.Link, match func(string) bool, after bool) {
	t.Helper()
	ctx := context.Background()
	resolve := func() error { _, err := e.svc.ResolveReview(ctx, id); return err }
	require.Equal(t, "COMMIT", link.Crash(t, server, match, after, resolve, resolve))
	server.Start(t)
	e.clock.Advance(2 * time.Minute)
	_, err := testkit.Must(payment.NewReconciler(e.svc))(t).Reconcile(ctx)
	require.NoError(t, err)
	p, err := e.svc.ResolveReview(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, e.get(t, id), p)
}

// recoverReviewCut checks ResolveReview's answer (got, err) to a call of it on payment id cut
// at exactly one statement (cut), recovers as recovery says ("retry": the operator's retry
// alone; "reconciler": the Reconciler first), and checks exact after the retry (and after
// the Reconciler too when reconcilerFinishes: it finishes a review the call took), the retry
// answering the payment as it is, a second retry the same, and the Observer told of each
// change once.
func (e *env) recoverReviewCut(t *testing.T, id, recovery string, got payment.Payment, cut []string, err error, reconcilerFinishes bool, exact func()) {
	t.Helper()
	ctx := context.Background()
	require.Len(t, cut, 1)
	if err != nil { // what an HTTP server answers 503 dependency_unavailable
		assert.True(t, depfail.Is(err), "cut at %q: %v", cut[0], err)
	} else {
		assert.Equal(t, e.get(t, id), got, "answered without error after the cut at %q: the payment as it is", cut[0])
	}
	if recovery == "reconciler" {
		e.clock.Advance(2 * time.Minute)
		_, err := testkit.Must(payment.NewReconciler(e.svc))(t).Reconcile(ctx)
		require.NoError(t, err)
		if reconcilerFinishes && e.get(t, id).State != payment.StateReview { // the review was taken: the Reconciler finished it
			exact()
		}
	}
	p, err := e.svc.ResolveReview(ctx, id)
	require.NoError(t, err, "the retry after the cut at %q", cut[0])
	assert.Equal(t, e.get(t, id), p, "the payment as it is")
	exact()
	again, err := e.svc.ResolveReview(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, p, again, "the same answer")
	e.observedOnce(t, id)
}

// TestResolveReviewOutcomesCrash: ResolveReview of each of reviewOutcomes with its database
// server killed (SIGKILL) at each COMMIT it sends, before the COMMIT reaches it and once it
// has committed, and started again: the call, and the operator's retry while the server is
// down, fail as the database being unavailable; after the restart the Reconciler and the
// retry leave the exact end state.
func TestResolveReviewOutcomesCrash(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	_, linked, link := testenv.LinkedMySQLAt(t, dsn)
	require.NoError(t, payment.CreateSchema(context.Background(), linked))
	ctx := context.Background()
	for i, c := range reviewOutcomes() {
		t.Run(c.name, func(t *testing.T) {
			clean := fmt.Sprintf("rvok%d-clean", i)
			e := newEnv(t, linked, nil)
			c.setup(t, e, clean)
			link.Arm(nil, false)
			_, err := e.svc.ResolveReview(ctx, clean)
			_, seen := link.Disarm()
			require.NoError(t, err)
			c.exact(t, e, clean)
			commits := testenv.CutPoints(seen, testenv.IsCommit)
			require.NotEmpty(t, commits)
			for _, p := range commits {
				after, k := p.After, p.N
				t.Run(fmt.Sprintf("after=%t/commit-%d", after, k), func(t *testing.T) {
					id := fmt.Sprintf("rvok%d-%t-%d", i, after, k)
					e := newEnv(t, linked, nil)
					c.setup(t, e, id)
					e.recoverReviewCrash(t, id, server, link, p.Match(), after)
					c.exact(t, e, id)
				})
			}
		})
	}
}
