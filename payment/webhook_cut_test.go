package payment_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// webhookCase is a payment brought to where the PG notifies it (setup: a fresh env on db,
// and the signed notification as the PG sends it), and the exact end state its handling
// leaves (exact: by is the cause of what the PG's answer settled, the webhook's own or the
// Reconciler's when it came first).
type webhookCase struct {
	name  string
	setup func(t *testing.T, db *bun.DB, id string) (e *env, body []byte, sig string)
	exact func(t *testing.T, e *env, id string, by payment.Cause)
}

// webhookCases: the approval of a payment whose answer was lost (UNKNOWN), the approval of
// a payment abandoned because the PG was certainly not reached (its void, the refund of all
// of it, recorded with the move and sent at once), the refund of a payment whose refund's
// answer was lost (the refund PENDING), and the PG reversing an approval (the payment moves
// to REVIEW).
func webhookCases() []webhookCase {
	ctx := context.Background()
	return []webhookCase{
		{"approved", func(t *testing.T, db *bun.DB, id string) (*env, []byte, string) {
			e := newEnv(t, db, nil)
			e.unknown(t, card(id, 5000))
			body, sig := e.webhook(t, id)
			return e, body, sig
		}, func(t *testing.T, e *env, id string, by payment.Cause) {
			p := e.get(t, id)
			assert.Equal(t, payment.StateApproved, p.State)
			assert.NotEmpty(t, p.PGReference)
			assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>UNKNOWN:no_answer", "UNKNOWN>APPROVED:" + string(by)}, e.history(t, id))
			assert.Equal(t, 1, e.sim.Charges(id), "charged once")
			assert.Empty(t, e.refunds(t, id))
		}},
		{"abandoned", func(t *testing.T, db *bun.DB, id string) (*env, []byte, string) {
			e := newEnv(t, db, nil)
			req := card(id, 5000)
			e.record(t, req)
			e.sim.InjectFault(id, pgsim.FaultUnavailable, 1)
			_, err := e.svc.Attempt(ctx, req)
			require.ErrorIs(t, err, payment.ErrAbandoned)
			// The PG processes it after all (a late retry of its own, say).
			_, err = e.sim.Approve(ctx, payment.ApproveRequest{PaymentID: id, OrderID: req.OrderID, Amount: req.Amount,
				Currency: req.Currency, Method: req.Method, Token: req.Token})
			require.NoError(t, err)
			body, sig := e.webhook(t, id)
			return e, body, sig
		}, func(t *testing.T, e *env, id string, _ payment.Cause) { // the Reconciler never settles an ABANDONED payment
			p := e.get(t, id)
			assert.Equal(t, payment.StateRefunded, p.State, "the charge the PG made anyway is given back")
			assert.Equal(t, int64(5000), p.Refunded)
			assert.Zero(t, p.RefundPending)
			assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>ABANDONED:abandoned", "ABANDONED>APPROVED:webhook",
				"APPROVED>REFUNDED:refund"}, e.history(t, id))
			assert.Equal(t, []string{"void-" + id + ":SUCCEEDED:5000"}, e.refunds(t, id))
			st, err := e.sim.Status(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, int64(5000), st.Canceled, "refunded once at the PG")
			assert.Equal(t, 1, e.sim.Charges(id))
		}},
		{"canceled", func(t *testing.T, db *bun.DB, id string) (*env, []byte, string) {
			e := newEnv(t, db, nil)
			_, err := e.svc.Pay(ctx, card(id, 5000))
			require.NoError(t, err)
			e.sim.InjectFault("r-"+id, pgsim.FaultLostResponse, 1)
			_, err = e.svc.Refund(ctx, refund("r-"+id, id, 2000))
			require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
			body, sig, err := e.sim.CancelWebhook("r-" + id)
			require.NoError(t, err)
			return e, body, sig
		}, func(t *testing.T, e *env, id string, _ payment.Cause) {
			p := e.get(t, id)
			assert.Equal(t, payment.StatePartiallyRefunded, p.State)
			assert.Equal(t, int64(2000), p.Refunded)
			assert.Zero(t, p.RefundPending)
			assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway", "APPROVED>PARTIALLY_REFUNDED:refund"}, e.history(t, id))
			assert.Equal(t, []string{"r-" + id + ":SUCCEEDED:2000"}, e.refunds(t, id))
			st, err := e.sim.Status(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, int64(2000), st.Canceled, "refunded once at the PG")
			assert.Equal(t, 1, e.sim.Charges(id))
		}},
		{"reversed", func(t *testing.T, db *bun.DB, id string) (*env, []byte, string) {
			e := newEnv(t, db, nil)
			_, err := e.svc.Pay(ctx, card(id, 5000))
			require.NoError(t, err)
			require.NoError(t, e.sim.Overturn(id))
			body, sig := e.webhook(t, id)
			return e, body, sig
		}, func(t *testing.T, e *env, id string, _ payment.Cause) {
			assert.Equal(t, payment.StateReview, e.get(t, id).State)
			assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway", "APPROVED>REVIEW:webhook"}, e.history(t, id))
			assert.Empty(t, e.refunds(t, id))
		}},
	}
}

// TestWebhookCut: HandleWebhook (webhookCases) with its database connection cut at each of
// its statements in turn — the reads, the transaction recording the PG's answer, its
// COMMIT: before the statement reaches the server (it never runs) and after the server
// answered it (it ran, a COMMIT committed, the answer is lost). The handler fails as the
// database being unavailable (depfail.Is: a 503 the PG redelivers on), or not at all, and
// then only with its work done; production's recovery — the PG's redelivery of a
// notification not answered 2xx, or the Reconciler and then that redelivery — answers as
// the handling without a cut does (nil) and leaves the exact end state: one transition,
// one charge, every refund made once, at the PG too; a duplicate delivery changes nothing.
// The Observer is told of each transition, settled refund and contradiction once, a
// COMMIT's lost answer notwithstanding (the change is found to have committed).
func TestWebhookCut(t *testing.T) {
	_, linked, link := testenv.LinkedMySQL(t)
	require.NoError(t, payment.CreateSchema(context.Background(), linked))
	ctx := context.Background()
	for i, c := range webhookCases() {
		t.Run(c.name, func(t *testing.T) {
			deliver := func(t *testing.T, id string, match func(string) bool, after bool) (*env, []byte, string, []string, []string, error) {
				t.Helper()
				e, body, sig := c.setup(t, linked, id)
				link.Arm(match, after)
				err := e.svc.HandleWebhook(ctx, body, sig)
				cut, seen := link.Disarm()
				return e, body, sig, cut, seen, err
			}
			clean := fmt.Sprintf("whc%d-clean", i)
			e, body, sig, _, statements, err := deliver(t, clean, nil, false)
			require.NoError(t, err)
			c.exact(t, e, clean, payment.CauseWebhook)
			require.NoError(t, e.svc.HandleWebhook(ctx, body, sig), "a redelivery")
			c.exact(t, e, clean, payment.CauseWebhook)
			e.observedOnce(t, clean)
			t.Logf("HandleWebhook sends %d statements: %q", len(statements), statements)
			firstCommit := slices.IndexFunc(statements, testenv.IsCommit) + 1
			require.NotZero(t, firstCommit)

			for _, recovery := range []string{"redelivery", "reconciler"} {
				for _, p := range testenv.CutPoints(statements, nil) {
					after, n := p.After, p.N
					t.Run(recovery+"/"+p.String(), func(t *testing.T) {
						id := fmt.Sprintf("whc%d-%s-%t-%d", i, recovery, after, n)
						e, body, sig, cut, _, err := deliver(t, id, p.Match(), after)
						require.Len(t, cut, 1)
						if err != nil {
							assert.True(t, depfail.Is(err), "cut at %q: %v", cut[0], err)
						}
						by := payment.CauseWebhook
						if recovery == "reconciler" {
							if n < firstCommit || n == firstCommit && !after { // the webhook recorded nothing
								by = payment.CauseReconciler
							}
							e.clock.Advance(2 * time.Minute)
							_, err := testkit.Must(payment.NewReconciler(e.svc))(t).Reconcile(ctx)
							require.NoError(t, err)
						}
						if err != nil { // the PG redelivers what was not answered 2xx
							require.NoError(t, e.svc.HandleWebhook(ctx, body, sig), "the redelivery after the cut at %q", cut[0])
						}
						c.exact(t, e, id, by)
						require.NoError(t, e.svc.HandleWebhook(ctx, body, sig), "a duplicate delivery")
						c.exact(t, e, id, by)
						e.observedOnce(t, id)
						e.noMismatchUnlessReview(t, id)
					})
				}
			}
		})
	}
}

// TestWebhookCrash: HandleWebhook (webhookCases) with its database server killed (SIGKILL)
// at each COMMIT it sends, before the COMMIT reaches it and once it has committed, and
// started again: the handler, and the PG's redelivery while the server is down, fail as
// the database being unavailable; after the restart the redelivery answers nil and leaves
// the exact end state.
func TestWebhookCrash(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	_, linked, link := testenv.LinkedMySQLAt(t, dsn)
	require.NoError(t, payment.CreateSchema(context.Background(), linked))
	ctx := context.Background()
	for i, c := range webhookCases() {
		t.Run(c.name, func(t *testing.T) {
			id := fmt.Sprintf("whk%d-clean", i)
			e, body, sig := c.setup(t, linked, id)
			link.Arm(nil, false)
			require.NoError(t, e.svc.HandleWebhook(ctx, body, sig))
			_, seen := link.Disarm()
			c.exact(t, e, id, payment.CauseWebhook)
			commits := testenv.CutPoints(seen, testenv.IsCommit)
			require.NotEmpty(t, commits)
			for _, p := range commits {
				after, k := p.After, p.N
				t.Run(fmt.Sprintf("after=%t/commit-%d", after, k), func(t *testing.T) {
					id := fmt.Sprintf("whk%d-%t-%d", i, after, k)
					e, body, sig := c.setup(t, linked, id)
					deliver := func() error { return e.svc.HandleWebhook(ctx, body, sig) }
					require.Equal(t, "COMMIT", link.Crash(t, server, p.Match(), after, deliver, deliver))
					server.Start(t)
					require.NoError(t, e.svc.HandleWebhook(ctx, body, sig), "the redelivery after the restart")
					c.exact(t, e, id, payment.CauseWebhook)
					e.noMismatchUnlessReview(t, id)
				})
			}
		})
	}
}

// noMismatchUnlessReview is noMismatch for a payment not in REVIEW (CrossCheck reports
// every payment in REVIEW).
func (e *env) noMismatchUnlessReview(t *testing.T, id string) {
	t.Helper()
	if e.get(t, id).State != payment.StateReview {
		e.noMismatch(t, id)
	}
}

// observedOnce checks that the Observer was told of every persisted transition of payment
// id exactly once, of every refund of it settled here exactly once, and, for a payment in
// REVIEW, of the contradiction that moved it there exactly once: a change whose COMMIT's
// answer was lost is still told, once.
func (e *env) observedOnce(t *testing.T, id string) {
	t.Helper()
	ts, err := e.svc.Transitions(context.Background(), id)
	require.NoError(t, err)
	for _, tr := range ts {
		assert.Equal(t, 1, e.obs.Count("transition", map[string]string{"payment_id": id, "from": string(tr.From), "to": string(tr.To)}),
			"transition %s>%s observed once", tr.From, tr.To)
	}
	rs, err := e.svc.Refunds(context.Background(), id)
	require.NoError(t, err)
	for _, r := range rs {
		want := 1
		if r.State == payment.RefundPending || strings.HasPrefix(r.ID, "console") { // the PG's own, recorded as made: never settled here
			want = 0
		}
		assert.Equal(t, want, e.obs.Count("refund_settled", map[string]string{"refund_id": r.ID, "state": string(r.State)}),
			"refund %s %s observed", r.ID, r.State)
	}
	if e.get(t, id).State == payment.StateReview {
		assert.Equal(t, 1, e.obs.Count("contradiction", map[string]string{"payment_id": id}), "the contradiction told once")
	}
}
