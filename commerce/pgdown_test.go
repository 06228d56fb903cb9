package commerce_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/payment/resilient"
)

// withBreaker puts e's gateway behind the resilient policies (no retry; a breaker opening
// at the first failure for openFor) and rebuilds e's payments and checkout on it.
func withBreaker(t *testing.T, e *commercetest.Env, openFor time.Duration) *resilient.Gateway {
	t.Helper()
	gw := testkit.Must(resilient.Wrap(e.Gateway, resilient.WithRetries(1, time.Millisecond, time.Millisecond),
		resilient.WithBreaker(1, 1, openFor), resilient.WithHalfOpenSuccesses(1)))(t)
	now := e.Clock.Now
	e.Payments = testkit.Must(payment.New(e.DB, gw, payment.WithClock(now), payment.WithWebhookVerifier(e.PG.WebhookVerifier())))(t)
	e.Reconciler = testkit.Must(payment.NewReconciler(e.Payments, payment.WithThreshold(0)))(t)
	writer := testkit.Must(outbox.NewWriter(outbox.WithClock(now)))(t)
	e.Service = testkit.Must(commerce.New(commerce.Config{
		DB: e.DB, Inventory: e.Inventory, Coupons: e.Coupons, Ledger: e.Ledger, Payments: e.Payments,
		Reconciler: e.Reconciler, Outbox: writer, Relay: e.Relay,
	}, commerce.WithClock(now)))(t)
	return gw
}

// requireHeld checks that o (2 units of sku, 2,000 points of 5,000, b's coupon) still holds
// everything it held when placed.
func requireHeld(t *testing.T, e *commercetest.Env, b buyer, sku string) {
	t.Helper()
	requireStock(t, e, sku, 8, 2, 0)
	assert.Equal(t, ledger.Balance{Available: 3_000, Held: 2_000, Total: 5_000}, balance(t, e, b.user))
	assert.Equal(t, coupon.StateReserved, couponState(t, e, b.coupon))
}

// TestPayWhileBreakerOpen: while the PG's circuit breaker is open, Pay answers at once that
// the PG is unavailable (errcode.ErrUnavailable, retry after the breaker's remaining delay),
// without claiming the order, recording a payment or calling the PG; the order keeps its
// holds, and once the PG is back the same request pays it.
func TestPayWhileBreakerOpen(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		const openFor = 500 * time.Millisecond
		gw := withBreaker(t, e, openFor)
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 5_000, 3_000)
		o := place(t, e, b, sku, 2, 2_000)

		e.PG.SetFault(pgsim.FaultUnavailable)
		_, err := gw.Approve(ctx, payment.ApproveRequest{PaymentID: "probe", OrderID: "probe", Amount: 1, Currency: "KRW", Method: payment.MethodCard})
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		require.Equal(t, resilient.BreakerOpen, gw.BreakerState())
		calls := e.PG.Stats().ApproveCalls

		_, err = e.Service.Pay(ctx, cardPayment(o, "tok_ok"))
		require.ErrorIs(t, err, errcode.ErrUnavailable)
		assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		assert.Equal(t, errcode.DependencyUnavailable, errcode.CodeOf(err))
		wait := errcode.RetryAfter(err, 0)
		assert.Positive(t, wait)
		assert.LessOrEqual(t, wait, openFor)
		assert.Equal(t, calls, e.PG.Stats().ApproveCalls, "the PG is not called")
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPendingPayment, got.Status)
		assert.Empty(t, got.PaymentID)
		assert.Empty(t, got.Step)
		assert.Empty(t, testkit.Must(e.Payments.ByOrder(ctx, o.ID))(t), "no payment recorded")
		requireHeld(t, e, b, sku)

		e.PG.SetFault(pgsim.FaultNone)
		require.Eventually(t, func() bool { return gw.Ready() == nil }, 10*time.Second, 10*time.Millisecond)
		o = pay(t, e, o, "tok_ok")
		assert.Equal(t, commerce.StatusPaid, o.Status)
		assert.Equal(t, 1, e.PG.Charges(o.PaymentID))
		requireStock(t, e, sku, 8, 0, 2)
		e.RequireClean(t)
	})
}

// requireUnreached checks Pay's answer when the PG was not reached: a dependency failure
// (HTTP 503) whose payment was abandoned, to retry after DefaultPGRetryAfter.
func requireUnreached(t *testing.T, err error) {
	t.Helper()
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	assert.ErrorIs(t, err, payment.ErrAbandoned)
	assert.Equal(t, errcode.DependencyUnavailable, errcode.CodeOf(err))
	assert.Equal(t, commerce.DefaultPGRetryAfter, errcode.RetryAfter(err, 0))
}

// TestPayGatewayUnreached: a Pay whose PG call was refused unprocessed fails at once as a
// dependency failure; its payment is ABANDONED, nothing is charged, and the order is
// PENDING_PAYMENT again with all its holds, for the buyer to pay again or cancel. Neither
// the reconciler nor recovery sends the abandoned payment. Once the PG is back, Pay — with
// the first key again — charges exactly once, under a new payment ID.
func TestPayGatewayUnreached(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 5_000, 3_000)
		o := place(t, e, b, sku, 2, 2_000)
		first := cardPayment(o, "tok_ok")
		second := first
		second.IdempotencyKey = "another-key"

		e.PG.SetFault(pgsim.FaultUnavailable)
		ids := []string{"pay-" + o.ID, "pay-" + o.ID + "-2"}
		for i, req := range []commerce.PayRequest{first, second} {
			_, err := e.Service.Pay(ctx, req)
			requireUnreached(t, err)
			got := order(t, e, o.ID)
			assert.Equal(t, commerce.StatusPendingPayment, got.Status)
			assert.Empty(t, got.Step)
			assert.Empty(t, got.PayMethod)
			assert.Equal(t, ids[i], got.PaymentID, "a new payment ID per attempt")
			assert.Equal(t, payment.StateAbandoned, paymentOf(t, e, ids[i]).State)
			requireHeld(t, e, b, sku)
		}
		rep, err := e.Reconciler.Reconcile(ctx)
		require.NoError(t, err)
		assert.Zero(t, rep.Examined, "nothing for the reconciler to send")
		rec, err := e.Service.Recover(ctx)
		require.NoError(t, err)
		assert.Zero(t, rec.Examined, "nothing for recovery to do")
		assert.Zero(t, e.PG.Stats().Charges)
		e.PG.SetFault(pgsim.FaultNone)
		e.RequireClean(t)

		paid := pay(t, e, o, "tok_ok") // the first key again
		assert.Equal(t, commerce.StatusPaid, paid.Status)
		assert.Equal(t, "pay-"+o.ID+"-3", paid.PaymentID)
		assert.Equal(t, payment.MethodCard, paid.PayMethod)
		assert.Equal(t, 1, e.PG.Charges(paid.PaymentID))
		assert.Equal(t, 1, e.PG.Stats().Charges, "charged once in all")
		for _, id := range ids {
			assert.Equal(t, 1, e.PG.ApproveCalls(id), "an abandoned payment is sent once, refused")
			assert.Equal(t, payment.StateAbandoned, paymentOf(t, e, id).State)
		}
		again, err := e.Service.Pay(ctx, first)
		require.NoError(t, err)
		assert.Equal(t, paid, again, "a replay answers the same")
		_, err = e.Service.Pay(ctx, second)
		require.ErrorAs(t, err, new(*commerce.StateError), "the other key finds the order paid")
		requireStock(t, e, sku, 8, 0, 2)
		assert.Equal(t, ledger.Balance{Available: 3_150, Total: 3_150}, balance(t, e, b.user))
		assert.Equal(t, coupon.StateUsed, couponState(t, e, b.coupon))
		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}

// TestPayAbandonedCrashIsFinished: a crash between abandoning the payment and reopening the
// order leaves it PAYING on an ABANDONED payment; Recover reopens it, and so does the
// client's retry (answering 503 as the interrupted request would have); either way the next
// Pay charges once under a new payment ID.
func TestPayAbandonedCrashIsFinished(t *testing.T) {
	hook := &commercetest.Hook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		for _, byRecover := range []bool{true, false} {
			sku := e.Product(t, 10_000, 10)
			b := newBuyer(t, e, 5_000, 3_000)
			o := place(t, e, b, sku, 2, 2_000)
			req := cardPayment(o, "tok_ok")

			e.PG.SetFault(pgsim.FaultUnavailable)
			hook.FailAt(commerce.StepPayAbandoned)
			_, err := e.Service.Pay(ctx, req)
			require.ErrorIs(t, err, commerce.ErrInjected)
			got := order(t, e, o.ID)
			require.Equal(t, commerce.StatusPaying, got.Status)
			require.Equal(t, payment.StateAbandoned, paymentOf(t, e, got.PaymentID).State)
			e.PG.SetFault(pgsim.FaultNone)

			if byRecover {
				rep, err := e.Service.Recover(ctx)
				require.NoError(t, err)
				assert.Equal(t, 1, rep.Advanced)
			} else {
				_, err := e.Service.Pay(ctx, req)
				requireUnreached(t, err)
			}
			got = order(t, e, o.ID)
			assert.Equal(t, commerce.StatusPendingPayment, got.Status)
			assert.Empty(t, got.Step)
			requireHeld(t, e, b, sku)

			paid := pay(t, e, o, "tok_ok")
			assert.Equal(t, commerce.StatusPaid, paid.Status)
			assert.Equal(t, "pay-"+o.ID+"-2", paid.PaymentID)
			assert.Equal(t, 1, e.PG.Charges(paid.PaymentID))
			assert.Zero(t, e.PG.Charges("pay-"+o.ID))
			requireStock(t, e, sku, 8, 0, 2)
		}
		e.RequireClean(t)
	}, commerce.WithFaultHook(hook.Func))
}

// TestPayAbandonRacesReconciler: Pays whose PG call is refused race the payment reconciler,
// which may find their payments REQUESTED and send them itself. Each payment is either
// abandoned and never charged, or sent and charged once, never both; once everything is
// settled and the reopened orders paid again, every order is PAID, charged exactly once in
// all.
func TestPayAbandonRacesReconciler(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		const n = 8
		sku := e.Product(t, 1_000, n)
		orders := make([]commerce.Order, n)
		for i := range orders {
			orders[i] = place(t, e, newBuyer(t, e, 0, 0), sku, 1, 0)
			e.PG.InjectFault("pay-"+orders[i].ID, pgsim.FaultUnavailable, 1) // whoever sends it first
		}
		stop := make(chan struct{})
		var reconciler, pays sync.WaitGroup
		reconciler.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := e.Reconciler.Reconcile(ctx)
				assert.NoError(t, err)
			}
		})
		for _, o := range orders {
			pays.Go(func() {
				if _, err := e.Service.Pay(ctx, cardPayment(o, "tok_ok")); err != nil {
					assert.ErrorIs(t, err, payment.ErrAbandoned)
				}
			})
		}
		pays.Wait()
		close(stop)
		reconciler.Wait()

		abandoned := 0
		for _, o := range orders {
			p := paymentOf(t, e, "pay-"+o.ID)
			if p.State == payment.StateAbandoned {
				abandoned++
				assert.Zero(t, e.PG.Charges(p.ID), "an abandoned payment is never charged")
			} else {
				assert.LessOrEqual(t, e.PG.Charges(p.ID), 1)
			}
		}
		t.Logf("%d of %d payments abandoned", abandoned, n)

		e.Clock.Advance(time.Second) // past the reconciler's take-ups
		e.Settle(t)
		for _, o := range orders {
			got := order(t, e, o.ID)
			if got.Status == commerce.StatusPendingPayment {
				got = pay(t, e, o, "tok_ok")
			}
			assert.Equal(t, commerce.StatusPaid, got.Status, o.ID)
			charges := 0
			for _, p := range testkit.Must(e.Payments.ByOrder(ctx, o.ID))(t) {
				charges += e.PG.Charges(p.ID)
			}
			assert.Equal(t, 1, charges, "%s charged once in all", o.ID)
		}
		assert.Equal(t, n, e.PG.Stats().Charges)
		assert.Zero(t, e.PG.Stats().Cancels, "nothing to refund")
		requireStock(t, e, sku, 0, 0, n)
		e.RequireClean(t)
	})
}

// TestAbandonedPaymentApprovedAnyway: should the PG, against its word, approve a payment
// that was abandoned, its webhook records the PG's truth (ABANDONED -> APPROVED); the order
// paid by a later attempt is unchanged and the audit reports the charge that no order pays
// by.
func TestAbandonedPaymentApprovedAnyway(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		o := place(t, e, newBuyer(t, e, 0, 0), sku, 1, 0)
		e.PG.SetFault(pgsim.FaultUnavailable)
		_, err := e.Service.Pay(ctx, cardPayment(o, "tok_ok"))
		requireUnreached(t, err)
		e.PG.SetFault(pgsim.FaultNone)
		paid := pay(t, e, o, "tok_ok")
		require.Equal(t, commerce.StatusPaid, paid.Status)
		e.RequireClean(t)

		abandoned := "pay-" + o.ID
		_, err = e.PG.Approve(ctx, payment.ApproveRequest{PaymentID: abandoned, OrderID: o.ID, Amount: o.AmountDue,
			Currency: "KRW", Method: payment.MethodCard, Token: "tok_ok"})
		require.NoError(t, err)
		body, sig, err := e.PG.Webhook(abandoned)
		require.NoError(t, err)
		require.NoError(t, e.Service.HandlePaymentWebhook(ctx, body, sig))
		assert.Equal(t, payment.StateApproved, paymentOf(t, e, abandoned).State)
		assert.Equal(t, paid, order(t, e, o.ID))

		rep, err := e.Service.Audit(ctx)
		require.NoError(t, err)
		require.Len(t, rep.Discrepancies, 1, "%v", rep.Discrepancies)
		assert.Equal(t, "payment", rep.Discrepancies[0].Kind)
		assert.Contains(t, rep.Discrepancies[0].Detail, abandoned)
	})
}
