package commerce_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// call sets up a fresh case named name, arms the link (arm) and sends the request under
// test, and returns what the link cut and saw with the request's error.
type call func(t *testing.T, name string, arm func()) (cut, seen []string, err error)

// cutSweep runs call once with nothing cut, to learn the statements it sends, then once per
// statement and way of cutting it (before it reaches the server, after its answer: see
// testenv.Link) and recovery ("retry": the client's retry alone; "recover": the payment
// reconciler and Recover first, then the retry; "gone": the client never comes back, and
// the reconciler, Expire and Recover run past the order expiry), each on a fresh case;
// recover(t, name, mode) recovers it and checks its exact end state. A request cut fails as a dependency
// failure (depfail.Is: what an HTTP server answers 503), or not at all, answering then what
// it stored (call checks that).
func cutSweep(t *testing.T, link *testenv.Link, call call, recover func(t *testing.T, name, mode string)) {
	t.Helper()
	_, seen, err := call(t, "clean", func() { link.Arm(nil, false) })
	require.NoError(t, err)
	recover(t, "clean", "retry")
	t.Logf("%d statements: %q", len(seen), seen)
	require.Contains(t, seen, "COMMIT")
	for _, mode := range []string{"retry", "recover", "gone"} {
		for _, p := range testenv.CutPoints(seen, nil) {
			after, n := p.After, p.N
			name := fmt.Sprintf("%s-%t-%d", mode, after, n)
			t.Run(name, func(t *testing.T) {
				cut, _, err := call(t, name, func() { link.Arm(p.Match(), after) })
				require.Len(t, cut, 1)
				if err != nil {
					require.True(t, depfail.Is(err), "cut at %q: %v", cut[0], err)
				}
				recover(t, name, mode)
			})
		}
	}
}

// crashSweep is cutSweep killing the database server (SIGKILL) at each COMMIT, before it
// reaches the server and once it has committed, and starting it again before recovering
// ("recover": the payment reconciler and Recover, then the client's retry). The client's
// retry while the server is down (retry: its request again) fails as a dependency failure.
func crashSweep(t *testing.T, server *testenv.Own, link *testenv.Link, call call, retry func(t *testing.T, name string) error,
	recover func(t *testing.T, name, mode string)) {
	t.Helper()
	_, seen, err := call(t, "clean", func() { link.Arm(nil, false) })
	require.NoError(t, err)
	recover(t, "clean", "retry")
	commits := testenv.CutPoints(seen, testenv.IsCommit)
	require.NotEmpty(t, commits)
	for _, p := range commits {
		after, k := p.After, p.N
		name := fmt.Sprintf("crash-%t-%d", after, k)
		t.Run(name, func(t *testing.T) {
			stopped := make(chan struct{})
			cut, _, err := call(t, name, func() {
				link.ArmThen(p.Match(), after, func() { server.Stop(t, 0); close(stopped) })
			})
			require.Equal(t, []string{"COMMIT"}, cut)
			require.Error(t, err, "the server is down")
			require.True(t, depfail.Is(err), "%v", err)
			<-stopped
			err = retry(t, name)
			require.Error(t, err, "the server is down")
			require.True(t, depfail.Is(err), "the retry while the server is down: %v", err)
			server.Start(t)
			recover(t, name, "recover")
		})
	}
}

// TestTopUpRetryAbandonedCut: the client's retry of a top-up whose first attempt the PG
// refused unprocessed (its payment ABANDONED) makes a new attempt (retryAbandoned), with
// its database connection cut at each statement in turn — the top-up's INSERT that finds
// it recorded, its reads, the transaction moving it to the new payment and recording that
// payment (each statement and the COMMIT), the charge, the completing transaction. Then,
// the client retrying (after the payment reconciler and Recover, or alone), the top-up is
// COMPLETED on its second payment, charged once at the PG, the first never, the points
// exactly the amount, and the audit clean.
func TestTopUpRetryAbandonedCut(t *testing.T) {
	e, link := commercetest.MySQLLinked(t)
	call, recover := topUpRetry(e, link)
	cutSweep(t, link, call, recover)
}

// TestTopUpRetryAbandonedCrash is TestTopUpRetryAbandonedCut with the database server
// killed at each COMMIT (crashSweep).
func TestTopUpRetryAbandonedCrash(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	e, link := commercetest.MySQLLinkedAt(t, dsn)
	call, recover := topUpRetry(e, link)
	crashSweep(t, server, link, call, func(t *testing.T, name string) error {
		_, err := e.Service.TopUp(ctx, topUpRequest(name))
		return err
	}, recover)
}

// topUpRetry is the case of TestTopUpRetryAbandonedCut: its call and its recovery.
func topUpRetry(e *commercetest.Env, link *testenv.Link) (call, func(t *testing.T, name, mode string)) {
	call := func(t *testing.T, name string, arm func()) ([]string, []string, error) {
		req := topUpRequest(name)
		e.PG.SetFault(pgsim.FaultUnavailable)
		_, err := e.Service.TopUp(ctx, req)
		e.PG.SetFault(pgsim.FaultNone)
		requireUnreached(t, err)
		arm()
		return topUpCut(t, e, link, req)
	}
	recover := func(t *testing.T, name, mode string) {
		req := topUpRequest(name)
		settleAs(t, e, mode)
		tu, err := e.Service.TopUp(ctx, req)
		require.NoError(t, err)
		first := "pay-" + tu.ID
		if mode == "gone" && tu.Status == commerce.TopUpFailed {
			// Cut before the new attempt was recorded: failed past the expiry, nothing charged.
			assert.Equal(t, commerce.FailurePGUnreached, tu.FailureCode)
			assert.Equal(t, first, tu.PaymentID, "no new attempt")
			assert.Equal(t, payment.StateAbandoned, paymentOf(t, e, first).State)
			assert.Zero(t, e.PG.Charges(first))
			assert.Equal(t, ledger.Balance{}, balance(t, e, req.UserID))
			e.RequireClean(t)
			return
		}
		assert.Equal(t, commerce.TopUpCompleted, tu.Status)
		assert.Equal(t, first+"-2", tu.PaymentID)
		assert.Equal(t, payment.StateAbandoned, paymentOf(t, e, first).State)
		assert.Equal(t, payment.StateApproved, paymentOf(t, e, tu.PaymentID).State)
		assert.Zero(t, e.PG.Charges(first), "the abandoned payment is never charged")
		assert.Equal(t, 1, e.PG.Charges(tu.PaymentID), "charged once")
		assert.Equal(t, ledger.Balance{Available: 30_000, Total: 30_000}, balance(t, e, req.UserID))
		again, err := e.Service.TopUp(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, tu, again)
		e.RequireClean(t)
	}
	return call, recover
}

// TestTopUpCut: a new top-up, its database connection cut at each statement of the call in
// turn — its recording transaction (the top-up's INSERT, the read of the user's ledger
// balance that refuses a top-up past ledger.MaxBalance, the payment's request, COMMIT),
// the payment's attempt, the transaction charging the points and completing it. Then, the
// client retrying with its key (alone, after the payment reconciler and Recover, or late,
// past the order expiry, the reconciler having sent a recorded payment meanwhile), the
// top-up is COMPLETED once: its first payment approved and charged once at the PG, no
// other attempt made, the points exactly the amount, the retry again answering it as it
// is, and the audit clean (the charge and the event it implies and no other, the ledger
// summing to zero).
func TestTopUpCut(t *testing.T) {
	e, link := commercetest.MySQLLinked(t)
	call, recover := freshTopUp(e, link)
	cutSweep(t, link, call, recover)
}

// topUpCut makes the top-up req through the armed link and disarms it, returning what was
// cut and seen; a top-up answered must be answered as it is on record.
func topUpCut(t *testing.T, e *commercetest.Env, link *testenv.Link, req commerce.TopUpRequest) (cut, seen []string, err error) {
	t.Helper()
	tu, err := e.Service.TopUp(ctx, req)
	cut, seen = link.Disarm()
	if err == nil {
		assert.Equal(t, testkit.Must(e.Service.GetTopUp(ctx, tu.ID, commerce.Actor{Admin: true}))(t), tu, "answered as it is")
	}
	return cut, seen, err
}

// freshTopUp is the case of TestTopUpCut: its call and its recovery.
func freshTopUp(e *commercetest.Env, link *testenv.Link) (call, func(t *testing.T, name, mode string)) {
	call := func(t *testing.T, name string, arm func()) ([]string, []string, error) {
		arm()
		return topUpCut(t, e, link, topUpRequest(name))
	}
	recover := func(t *testing.T, name, mode string) {
		req := topUpRequest(name)
		settleAs(t, e, mode)
		tu, err := e.Service.TopUp(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpCompleted, tu.Status)
		assert.Equal(t, "pay-"+tu.ID, tu.PaymentID, "its first payment")
		assert.Equal(t, payment.StateApproved, paymentOf(t, e, tu.PaymentID).State)
		assert.Equal(t, 1, e.PG.Charges(tu.PaymentID), "charged once")
		_, err = e.Payments.Get(ctx, tu.PaymentID+"-2")
		assert.ErrorIs(t, err, payment.ErrPaymentNotFound, "no second attempt")
		assert.Equal(t, ledger.Balance{Available: req.Amount, Total: req.Amount}, balance(t, e, req.UserID))
		again, err := e.Service.TopUp(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, tu, again)
		e.RequireClean(t)
	}
	return call, recover
}

// topUpRequest is the top-up of topUpRetry's and freshTopUp's case name.
func topUpRequest(name string) commerce.TopUpRequest {
	return commerce.TopUpRequest{UserID: "u-" + name, Amount: 30_000, Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: "k-" + name}
}

// pointsRequest is the placement of pointsPayment's case name (its buyer "u-<name>").
func pointsRequest(name string) commerce.PlaceOrderRequest {
	return commerce.PlaceOrderRequest{UserID: "u-" + name, Lines: []commerce.Line{{ProductID: "points-sku", Qty: 1}}, Points: 3000,
		PayWithPoints: true, IdempotencyKey: "k-" + name}
}

// TestFinishPointsPaymentCut: an order placed and paid with points alone in one call
// (PlaceOrderRequest.PayWithPoints: the placement, then FinishPointsPayment), its database
// connection cut at each statement in turn — the placement's transaction, the claim
// moving it to PAYING, the transaction completing it, each with its COMMIT. Then, the
// client replaying the placement with its key (after Recover, or alone), the order is PAID
// once: the unit sold, the points captured exactly once, one order of the buyer, and the
// audit clean (the ledger summing to zero).
func TestFinishPointsPaymentCut(t *testing.T) {
	e, link := commercetest.MySQLLinked(t)
	call, recover := pointsPayment(t, e, link)
	cutSweep(t, link, call, recover)
}

// TestFinishPointsPaymentCrash is TestFinishPointsPaymentCut with the database server
// killed at each COMMIT (crashSweep).
func TestFinishPointsPaymentCrash(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	e, link := commercetest.MySQLLinkedAt(t, dsn)
	call, recover := pointsPayment(t, e, link)
	crashSweep(t, server, link, call, func(t *testing.T, name string) error {
		_, err := e.Service.PlaceOrder(ctx, pointsRequest(name))
		return err
	}, recover)
}

// pointsPayment is the case of TestFinishPointsPaymentCut: its call and its recovery.
func pointsPayment(t *testing.T, e *commercetest.Env, link *testenv.Link) (call, func(t *testing.T, name, mode string)) {
	const sku = "points-sku"
	_, err := e.Service.CreateProduct(ctx, commerce.NewProduct{ID: sku, Name: "Mug", Price: 3000, Stock: 1000})
	require.NoError(t, err)
	sold := int64(0)
	call := func(t *testing.T, name string, arm func()) ([]string, []string, error) {
		req := pointsRequest(name)
		e.GivePoints(t, req.UserID, 10_000)
		arm()
		o, err := e.Service.PlaceOrder(ctx, req)
		cut, seen := link.Disarm()
		if err == nil {
			assert.Equal(t, order(t, e, o.ID), o, "answered as it is")
		}
		return cut, seen, err
	}
	recover := func(t *testing.T, name, mode string) {
		req := pointsRequest(name)
		settleAs(t, e, mode)
		if mode == "gone" {
			_, err := e.Service.Expire(ctx)
			require.NoError(t, err)
			page, err := e.Service.ListOrders(ctx, req.UserID, commerce.OrderQuery{})
			require.NoError(t, err)
			if len(page.Orders) == 0 { // cut before the placement committed: nothing held
				assert.Equal(t, ledger.Balance{Available: 10_000, Total: 10_000}, balance(t, e, req.UserID))
				requireStock(t, e, sku, 1000-sold, 0, sold)
				e.RequireClean(t)
				return
			}
			require.Len(t, page.Orders, 1)
			if o := page.Orders[0]; o.Status != commerce.StatusPaid {
				// Placed, never paid: expired, everything it held given back.
				assert.Equal(t, commerce.StatusExpired, o.Status)
				again, err := e.Service.PlaceOrder(ctx, req)
				require.NoError(t, err)
				assert.Equal(t, order(t, e, o.ID), again, "the late replay finds it as it is")
				assert.Equal(t, commerce.StatusExpired, again.Status)
				assert.Equal(t, ledger.Balance{Available: 10_000, Total: 10_000}, balance(t, e, req.UserID))
				requireStock(t, e, sku, 1000-sold, 0, sold)
				e.RequireClean(t)
				return
			}
		}
		o, err := e.Service.PlaceOrder(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusPaid, o.Status)
		assert.Equal(t, o, order(t, e, o.ID))
		again, err := e.Service.PlaceOrder(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, o, again)
		page, err := e.Service.ListOrders(ctx, req.UserID, commerce.OrderQuery{})
		require.NoError(t, err)
		assert.Len(t, page.Orders, 1, "one order placed")
		assert.Equal(t, ledger.Balance{Available: 7000, Total: 7000}, balance(t, e, req.UserID))
		sold++
		requireStock(t, e, sku, 1000-sold, 0, sold)
		e.RequireClean(t)
	}
	return call, recover
}

// TestResolvePaymentReviewCut: an operator's ResolvePaymentReview of a failed top-up's
// payment that the PG approved after all (its decline overturned: the payment is in
// REVIEW), cut at each statement: commerce's reads, then payment.Service.ResolveReview's
// transaction taking the PG's record and the give-back's send. Then (after the payment
// reconciler and Recover, or alone) the operator's call again finds the payment REFUNDED,
// given back once at the PG, the top-up still FAILED, no points credited, and
// the audit clean.
func TestResolvePaymentReviewCut(t *testing.T) {
	e, link := commercetest.MySQLLinked(t)
	call, _, recover := resolveReview(e, link)
	cutSweep(t, link, call, recover)
}

// TestResolvePaymentReviewCrash is TestResolvePaymentReviewCut with the database server
// killed at each COMMIT (crashSweep): the operator's call again while the server is down
// fails as a dependency failure; after the restart, the payment reconciler, Recover and
// the operator's call leave the same exact end state.
func TestResolvePaymentReviewCrash(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	e, link := commercetest.MySQLLinkedAt(t, dsn)
	call, retry, recover := resolveReview(e, link)
	crashSweep(t, server, link, call, retry, recover)
}

// resolveReview is the case of TestResolvePaymentReviewCut: its call, the operator's call
// again (retry) and its recovery.
func resolveReview(e *commercetest.Env, link *testenv.Link) (call, func(t *testing.T, name string) error, func(t *testing.T, name, mode string)) {
	pays := map[string]string{}
	users := map[string]string{}
	call := func(t *testing.T, name string, arm func()) ([]string, []string, error) {
		req := commerce.TopUpRequest{UserID: "u-" + name, Amount: 30_000, Method: payment.MethodCard, Token: pgsim.TokenDecline,
			IdempotencyKey: "k-" + name}
		tu, err := e.Service.TopUp(ctx, req)
		require.NoError(t, err)
		require.Equal(t, commerce.TopUpFailed, tu.Status)
		overturn(t, e, tu.PaymentID)
		pays[name], users[name] = tu.PaymentID, req.UserID
		arm()
		rec, err := e.Service.ResolvePaymentReview(ctx, tu.PaymentID)
		cut, seen := link.Disarm()
		if err == nil {
			assert.Equal(t, testkit.Must(e.Service.TopUpPayment(ctx, tu.ID, commerce.Actor{Admin: true}))(t), rec, "answered as it is")
		}
		return cut, seen, err
	}
	retry := func(t *testing.T, name string) error {
		_, err := e.Service.ResolvePaymentReview(ctx, pays[name])
		return err
	}
	recover := func(t *testing.T, name, mode string) {
		id := pays[name]
		settleAs(t, e, mode) // "gone": the operator does not call again: the Reconciler sends a give-back recorded
		rec, err := e.Service.ResolvePaymentReview(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, payment.StateRefunded, rec.Payment.State)
		assert.Equal(t, int64(30_000), rec.Payment.Refunded)
		assert.Zero(t, rec.Payment.RefundPending)
		require.Len(t, rec.Refunds, 1)
		assert.Equal(t, []any{"review-" + id, payment.RefundSucceeded, int64(30_000)},
			[]any{rec.Refunds[0].ID, rec.Refunds[0].State, rec.Refunds[0].Amount})
		st, err := e.PG.Status(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, int64(30_000), st.Canceled, "given back once at the PG")
		tu, err := e.Service.GetTopUp(ctx, rec.Payment.OrderID, commerce.Actor{Admin: true})
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpFailed, tu.Status)
		assert.Equal(t, ledger.Balance{}, balance(t, e, users[name]))
		again, err := e.Service.ResolvePaymentReview(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, rec, again, "the operator's call again answers the same")
		e.RequireClean(t)
	}
	return call, retry, recover
}

// settleAs recovers as a sweep's mode says: "recover" runs the payment reconciler and
// Recover, "gone" does so once the order expiry has passed (a client that never comes
// back), "retry" leaves everything to the client's retry.
func settleAs(t *testing.T, e *commercetest.Env, mode string) {
	t.Helper()
	switch mode {
	case "recover":
		e.Settle(t)
	case "gone":
		e.Clock.Advance(commerce.DefaultOrderExpiry)
		e.Settle(t)
	}
}
