package payment_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// TestResolveReviewCut: ResolveReview of a payment the record declined and the PG charged,
// with its database connection cut at each of its statements in turn (the reads, the
// transaction that takes the PG's record — its UPDATE, its refunds' INSERTs, its
// transition, its COMMIT — and the refund's send after it): before the statement reaches
// the server (it never runs) and after the server answered it (it ran, a COMMIT committed,
// the answer is lost). Two cases: 2,000 of it refunded in the PG's console before, and
// 1,000 refunded there while the give-back is on its way (the PG refuses it, and the PG's
// record is taken again: retake, its own transaction). The call fails as the database
// being unavailable (depfail.Is: the transactions' errors match errcode.ErrUnavailable, a
// plain read's are the driver's own, which an HTTP server answers 503
// dependency_unavailable all the same), never with a business answer, and a call that
// succeeds returns the payment as it is stored; then production's
// recovery — the caller's retry, or the Reconciler and then the retry — leaves the exact
// end state: REFUNDED, every refund made once, at the PG too, the record agreeing with
// the PG, and each transition and settled refund told to the Observer once.
func TestResolveReviewCut(t *testing.T) {
	db, linked, link := testenv.LinkedMySQL(t)
	require.NoError(t, payment.CreateSchema(context.Background(), db))
	ctx := context.Background()

	for i, c := range []struct {
		name string
		// gw is the PG for a case on payment id, before its console refund (nil: the simulator).
		gw      func(e **env, id string) func(*pgsim.Simulator) payment.Gateway
		console int64 // refunded in the PG's console before the review is resolved
		history []string
		refunds func(id string) []string
	}{
		{"console before", nil, 2000,
			[]string{"REVIEW>PARTIALLY_REFUNDED:resolved", "PARTIALLY_REFUNDED>REFUNDED:refund"},
			func(id string) []string {
				return []string{"console-" + id + ":SUCCEEDED:2000", "review-" + id + ":SUCCEEDED:3000"}
			}},
		{"console meanwhile", func(e **env, id string) func(*pgsim.Simulator) payment.Gateway {
			return func(s *pgsim.Simulator) payment.Gateway {
				return &racingPG{Simulator: s, race: "review-" + id, before: func() {
					_, err := (*e).sim.Cancel(ctx, payment.CancelRequest{CancelID: "by-hand-" + id, PaymentID: id, Amount: 1000, Reason: "by hand"})
					require.NoError(t, err)
				}}
			}
		}, 0,
			[]string{"REVIEW>APPROVED:resolved", "APPROVED>PARTIALLY_REFUNDED:resolved", "PARTIALLY_REFUNDED>REFUNDED:refund"},
			func(id string) []string {
				return []string{"review-" + id + ":FAILED:5000", "console2-" + id + ":SUCCEEDED:1000", "review2-" + id + ":SUCCEEDED:4000"}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			// resolve makes a payment id under review, with its env, then resolves it with the
			// link armed by match (nil: nothing cut), and returns the env, the statements cut
			// and sent, and the call's error.
			resolve := func(t *testing.T, id string, match func(string) bool, after bool) (*env, payment.Payment, []string, []string, error) {
				t.Helper()
				var e *env
				var gw func(*pgsim.Simulator) payment.Gateway
				if c.gw != nil {
					gw = c.gw(&e, id)
				}
				e = newEnv(t, linked, gw)
				e.underReview(t, id, true)
				if c.console > 0 {
					_, err := e.sim.Cancel(ctx, payment.CancelRequest{CancelID: "by-hand-" + id, PaymentID: id, Amount: c.console, Reason: "by hand"})
					require.NoError(t, err)
				}
				link.Arm(match, after)
				p, err := e.svc.ResolveReview(ctx, id)
				cut, seen := link.Disarm()
				return e, p, cut, seen, err
			}
			exact := func(t *testing.T, e *env, id string) {
				t.Helper()
				p := e.get(t, id)
				assert.Equal(t, payment.StateRefunded, p.State)
				assert.Equal(t, int64(5000), p.Refunded)
				assert.Zero(t, p.RefundPending)
				assert.Equal(t, append([]string{">REQUESTED:created", "REQUESTED>DECLINED:gateway", "DECLINED>REVIEW:webhook"}, c.history...),
					e.history(t, id))
				assert.ElementsMatch(t, c.refunds(id), e.refunds(t, id))
				st, err := e.sim.Status(ctx, id)
				require.NoError(t, err)
				assert.Equal(t, int64(5000), st.Canceled, "refunded once at the PG")
				assert.Equal(t, 1, e.sim.Charges(id))
				e.noMismatch(t, id)
			}

			clean := fmt.Sprintf("rvc%d-clean", i)
			e, _, _, statements, err := resolve(t, clean, nil, false)
			require.NoError(t, err)
			exact(t, e, clean)
			t.Logf("ResolveReview sends %d statements: %q", len(statements), statements)
			require.Contains(t, statements, "COMMIT")

			for _, recovery := range []string{"retry", "reconciler"} {
				for _, p := range testenv.CutPoints(statements, nil) {
					after, n := p.After, p.N
					t.Run(recovery+"/"+p.String(), func(t *testing.T) {
						id := fmt.Sprintf("rvc%d-%s-%t-%d", i, recovery, after, n)
						e, got, cut, _, err := resolve(t, id, p.Match(), after)
						e.recoverReviewCut(t, id, recovery, got, cut, err, false, func() {
							assert.Equal(t, payment.StateRefunded, e.get(t, id).State)
							exact(t, e, id)
						})
					})
				}
			}
		})
	}
}

// TestResolveReviewCrash: ResolveReview (the give-back of TestResolveReviewCut's first
// case) with its database server killed (SIGKILL) at each COMMIT it sends, before the
// COMMIT reaches it and once it has committed, and started again: the call, and the
// caller's retry while the server is down, fail as the database being unavailable; after
// the restart the Reconciler and the caller's retry
// leave the exact end state, every refund made once, at the PG too.
func TestResolveReviewCrash(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	db, linked, link := testenv.LinkedMySQLAt(t, dsn)
	require.NoError(t, payment.CreateSchema(context.Background(), db))
	ctx := context.Background()

	setup := func(t *testing.T, id string) *env {
		t.Helper()
		e := newEnv(t, linked, nil)
		e.underReview(t, id, true)
		_, err := e.sim.Cancel(ctx, payment.CancelRequest{CancelID: "by-hand-" + id, PaymentID: id, Amount: 2000, Reason: "by hand"})
		require.NoError(t, err)
		return e
	}
	exact := func(t *testing.T, e *env, id string) {
		t.Helper()
		p := e.get(t, id)
		assert.Equal(t, payment.StateRefunded, p.State)
		assert.Equal(t, int64(5000), p.Refunded)
		assert.Zero(t, p.RefundPending)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>DECLINED:gateway", "DECLINED>REVIEW:webhook",
			"REVIEW>PARTIALLY_REFUNDED:resolved", "PARTIALLY_REFUNDED>REFUNDED:refund"}, e.history(t, id))
		assert.ElementsMatch(t, []string{"console-" + id + ":SUCCEEDED:2000", "review-" + id + ":SUCCEEDED:3000"}, e.refunds(t, id))
		st, err := e.sim.Status(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, int64(5000), st.Canceled, "refunded once at the PG")
		e.noMismatch(t, id)
	}

	e := setup(t, "rvk-clean")
	link.Arm(nil, false)
	_, err := e.svc.ResolveReview(ctx, "rvk-clean")
	_, seen := link.Disarm()
	require.NoError(t, err)
	exact(t, e, "rvk-clean")
	commits := testenv.CutPoints(seen, testenv.IsCommit)
	require.Len(t, commits, 2*2, "two COMMITs, each cut before and after: taking the PG's record, settling the give-back")
	for _, p := range commits {
		after, k := p.After, p.N
		t.Run(fmt.Sprintf("after=%t/commit-%d", after, k), func(t *testing.T) {
			id := fmt.Sprintf("rvk-%t-%d", after, k)
			e := setup(t, id)
			e.recoverReviewCrash(t, id, server, link, p.Match(), after)
			exact(t, e, id)
		})
	}
}
