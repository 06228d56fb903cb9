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

// TestResolveReviewCut: ResolveReview of a payment the record declined and the PG charged,
// 2,000 of it refunded in the PG's console, with its database connection cut at each of
// its statements in turn (the reads, the transaction that takes the PG's record — its
// UPDATE, its two refunds' INSERTs, its transition, its COMMIT — and the refund's send
// after it): before the statement reaches the server (it never runs) and after the server
// answered it (it ran, a COMMIT committed, the answer is lost). The call fails as the
// database being unavailable (depfail.Is: the transaction's errors match
// errcode.ErrUnavailable, a plain read's are the driver's own, which an HTTP server answers
// 503 dependency_unavailable all the same), never with a business answer; then production's recovery —
// the caller's retry, or the Reconciler and then the retry — leaves the exact end state:
// REFUNDED, the console's 2,000 recorded once, the other 3,000 given back once, at the PG
// too, and the record agreeing with the PG.
func TestResolveReviewCut(t *testing.T) {
	db, linked, link := testenv.LinkedMySQL(t)
	require.NoError(t, payment.CreateSchema(context.Background(), db))
	ctx := context.Background()

	// resolve makes a payment under review with the console's refund, then resolves it
	// with the link armed by match (nil: nothing cut), and returns the statements sent and
	// the call's error.
	resolve := func(t *testing.T, e *env, id string, match func(string) bool, after bool) (cut, seen []string, err error) {
		t.Helper()
		e.underReview(t, id, true)
		_, err = e.sim.Cancel(ctx, payment.CancelRequest{CancelID: "by-hand-" + id, PaymentID: id, Amount: 2000, Reason: "by hand"})
		require.NoError(t, err)
		link.Arm(match, after)
		_, err = e.svc.ResolveReview(ctx, id)
		cut, seen = link.Disarm()
		return cut, seen, err
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
		assert.Equal(t, 1, e.sim.Charges(id))
		e.noMismatch(t, id)
	}

	e := newEnv(t, linked, nil)
	_, statements, err := resolve(t, e, "rvc-clean", nil, false)
	require.NoError(t, err)
	exact(t, e, "rvc-clean")
	t.Logf("ResolveReview sends %d statements: %q", len(statements), statements)
	require.Contains(t, statements, "COMMIT")

	for _, recovery := range []string{"retry", "reconciler"} {
		for _, after := range []bool{false, true} {
			for n := 1; n <= len(statements); n++ {
				name := fmt.Sprintf("%s/after=%t/%d", recovery, after, n)
				t.Run(name, func(t *testing.T) {
					e := newEnv(t, linked, nil)
					id := fmt.Sprintf("rvc-%s-%t-%d", recovery, after, n)
					cut, _, err := resolve(t, e, id, testenv.Nth(n, nil), after)
					require.Len(t, cut, 1)
					if err != nil { // what an HTTP server answers 503 dependency_unavailable
						assert.True(t, depfail.Is(err), "cut at %q: %v", cut[0], err)
					}
					if recovery == "reconciler" {
						e.clock.Advance(2 * time.Minute)
						_, err := testkit.Must(payment.NewReconciler(e.svc))(t).Reconcile(ctx)
						require.NoError(t, err)
					}
					p, err := e.svc.ResolveReview(ctx, id)
					require.NoError(t, err, "the retry after the cut at %q", cut[0])
					assert.Equal(t, payment.StateRefunded, p.State)
					exact(t, e, id)
				})
			}
		}
	}
}
