package commerce_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// crashCase is a flow to interrupt at each of its step boundaries.
type crashCase struct {
	name string
	// setup prepares an order (or user) and returns what run and check need.
	setup func(t *testing.T, e *commercetest.Env) *fixture
	// run is the interrupted operation; it is run again after recovery when the crash left
	// the order waiting for its client (a crash before the operation changed anything).
	run func(e *commercetest.Env, f *fixture) error
	// check verifies the exact end state.
	check func(t *testing.T, e *commercetest.Env, f *fixture)
}

type fixture struct {
	b     buyer
	sku   string
	order commerce.Order
	topUp commerce.TopUpRequest
}

func payFixture(token string) func(e *commercetest.Env, f *fixture) error {
	return func(e *commercetest.Env, f *fixture) error {
		_, err := e.Service.Pay(ctx, commerce.PayRequest{OrderID: f.order.ID, UserID: f.b.user, Method: payment.MethodCard,
			Token: token, IdempotencyKey: "pay"})
		return err
	}
}

func cancelFixture(e *commercetest.Env, f *fixture) error {
	_, err := e.Service.Cancel(ctx, f.order.ID, commerce.Actor{UserID: f.b.user})
	return err
}

// placed returns a setup placing 2 units at 10,000 with a 3,000 coupon and 2,000 points.
func placed(t *testing.T, e *commercetest.Env) *fixture {
	f := &fixture{sku: e.Product(t, 10_000, 5), b: newBuyer(t, e, 5_000, 3_000)}
	f.order = place(t, e, f.b, f.sku, 2, 2_000)
	return f
}

// requireGivenBack checks that an order that ended unpaid, or was cancelled, holds nothing
// any more.
func requireGivenBack(t *testing.T, e *commercetest.Env, f *fixture, status commerce.Status) {
	t.Helper()
	_, err := e.Ledger.Sweep(ctx) // as Run does: holds past their deadline give their points back
	require.NoError(t, err)
	o := order(t, e, f.order.ID)
	assert.Equal(t, status, o.Status)
	assert.Empty(t, o.Step)
	requireStock(t, e, f.sku, 5, 0, 0)
	assert.Equal(t, ledger.Balance{Available: 5_000, Total: 5_000}, balance(t, e, f.b.user))
	assert.Equal(t, coupon.StateAvailable, couponState(t, e, f.b.coupon))
}

var crashCases = []crashCase{
	{
		name:  "pay approved",
		setup: placed,
		run:   payFixture("tok_ok"),
		check: func(t *testing.T, e *commercetest.Env, f *fixture) {
			o := order(t, e, f.order.ID)
			assert.Equal(t, commerce.StatusPaid, o.Status)
			assert.Empty(t, o.Step)
			requireStock(t, e, f.sku, 3, 0, 2)
			assert.Equal(t, ledger.Balance{Available: 3_150, Total: 3_150}, balance(t, e, f.b.user))
			assert.Equal(t, 1, e.PG.Charges(o.PaymentID))
		},
	},
	{
		name:  "pay declined",
		setup: placed,
		run:   payFixture(pgsim.TokenDecline),
		check: func(t *testing.T, e *commercetest.Env, f *fixture) {
			requireGivenBack(t, e, f, commerce.StatusPaymentFailed)
			assert.Equal(t, pgsim.CodeCardDeclined, order(t, e, f.order.ID).FailureCode)
		},
	},
	{
		name: "late approval refunded",
		setup: func(t *testing.T, e *commercetest.Env) *fixture {
			f := placed(t, e)
			e.PG.SetFault(pgsim.FaultUnavailable)
			pay(t, e, f.order, "tok_ok")
			e.PG.SetFault(pgsim.FaultNone)
			e.Clock.Advance(commerce.DefaultOrderExpiry + commerce.DefaultPaymentWindow)
			_, err := e.Inventory.Sweep(ctx)
			require.NoError(t, err)
			return f
		},
		run: func(e *commercetest.Env, f *fixture) error {
			if _, err := e.Reconciler.Reconcile(ctx); err != nil {
				return err
			}
			_, err := e.Service.Recover(ctx)
			return err
		},
		check: func(t *testing.T, e *commercetest.Env, f *fixture) {
			requireGivenBack(t, e, f, commerce.StatusPaymentFailed)
			o := order(t, e, f.order.ID)
			assert.Equal(t, commerce.FailureUnfulfillable, o.FailureCode)
			assert.Equal(t, payment.StateRefunded, paymentOf(t, e, o.PaymentID).State)
			assert.Equal(t, 1, e.PG.Charges(o.PaymentID))
		},
	},
	{
		name:  "cancel unpaid",
		setup: placed,
		run:   cancelFixture,
		check: func(t *testing.T, e *commercetest.Env, f *fixture) {
			requireGivenBack(t, e, f, commerce.StatusCancelled)
		},
	},
	{
		name: "cancel paid",
		setup: func(t *testing.T, e *commercetest.Env) *fixture {
			f := placed(t, e)
			f.order = pay(t, e, f.order, "tok_ok")
			require.Equal(t, commerce.StatusPaid, f.order.Status)
			return f
		},
		run: cancelFixture,
		check: func(t *testing.T, e *commercetest.Env, f *fixture) {
			requireGivenBack(t, e, f, commerce.StatusCancelled)
			refunds, err := e.Payments.Refunds(ctx, f.order.PaymentID)
			require.NoError(t, err)
			require.Len(t, refunds, 1)
			assert.Equal(t, payment.RefundSucceeded, refunds[0].State)
		},
	},
	{
		name: "expire",
		setup: func(t *testing.T, e *commercetest.Env) *fixture {
			f := placed(t, e)
			e.Clock.Advance(commerce.DefaultOrderExpiry)
			return f
		},
		run: func(e *commercetest.Env, _ *fixture) error {
			_, err := e.Service.Expire(ctx)
			return err
		},
		check: func(t *testing.T, e *commercetest.Env, f *fixture) {
			requireGivenBack(t, e, f, commerce.StatusExpired)
		},
	},
	{
		name: "top-up",
		setup: func(t *testing.T, e *commercetest.Env) *fixture {
			user := e.ID("user")
			return &fixture{b: buyer{user: user}, topUp: commerce.TopUpRequest{UserID: user, Amount: 20_000,
				Method: payment.MethodCard, Token: "tok_ok", IdempotencyKey: "top"}}
		},
		run: func(e *commercetest.Env, f *fixture) error {
			_, err := e.Service.TopUp(ctx, f.topUp)
			return err
		},
		check: func(t *testing.T, e *commercetest.Env, f *fixture) {
			tu, err := e.Service.TopUp(ctx, f.topUp)
			require.NoError(t, err)
			assert.Equal(t, commerce.TopUpCompleted, tu.Status)
			assert.Equal(t, ledger.Balance{Available: 20_000, Total: 20_000}, balance(t, e, f.b.user))
			assert.Equal(t, 1, e.PG.Charges(tu.PaymentID))
		},
	},
}

// TestCrashAtEveryStep kills each flow at each of its step boundaries (the fault hook
// fails there, as if the process died: nothing after it runs, a transaction in progress
// rolls back), then restarts: the payment reconciler and Recover run, and the client
// repeats its request if the crash came before anything was recorded. The end state must
// be exactly that of an uninterrupted run, with every charge and refund made once and the
// audit clean.
func TestCrashAtEveryStep(t *testing.T) {
	hook := &commercetest.Hook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		for _, c := range crashCases {
			t.Run(c.name, func(t *testing.T) {
				// A clean run first, to learn the step boundaries this flow passes.
				f := c.setup(t, e)
				var err error
				steps := commercetest.Steps(hook, func() { err = c.run(e, f) })
				require.NoError(t, err)
				c.check(t, e, f)
				require.NotEmpty(t, steps)
				t.Logf("steps: %v", steps)

				for _, step := range steps {
					t.Run(step, func(t *testing.T) {
						f := c.setup(t, e)
						hook.FailAt(step)
						err := c.run(e, f)
						require.ErrorIs(t, err, commerce.ErrInjected)

						e.Settle(t) // the restart
						require.NoError(t, c.run(e, f), "the client's retry (or another pass)")
						c.check(t, e, f)
						e.RequireClean(t)
					})
				}
			})
		}
		e.RequireDelivered(t)
	}, commerce.WithFaultHook(hook.Func))
}

// TestPayClaimRecordsThePaymentAtomically: the order's move to PAYING and its payment's
// REQUESTED record commit together or not at all. A crash inside the claim's transaction
// leaves the order PENDING_PAYMENT with no payment and nothing charged; a crash right after
// its commit leaves the payment on record, REQUESTED and never submitted, which the
// reconciler charges once; every replay answers the same.
func TestPayClaimRecordsThePaymentAtomically(t *testing.T) {
	hook := &commercetest.Hook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		b := newBuyer(t, e, 3_000, 1_000)
		o := place(t, e, b, sku, 2, 3_000)
		req := cardPayment(o, "tok_visa")

		hook.FailAt(commerce.StepPayClaim)
		_, err := e.Service.Pay(ctx, req)
		require.ErrorIs(t, err, commerce.ErrInjected)
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPendingPayment, got.Status)
		assert.Empty(t, got.PaymentID)
		payments, err := e.Payments.ByOrder(ctx, o.ID)
		require.NoError(t, err)
		assert.Empty(t, payments, "the claim rolled back: no payment on record")
		assert.Zero(t, e.PG.Stats().ApproveCalls)

		hook.FailAt(commerce.StepPayPaying)
		_, err = e.Service.Pay(ctx, req)
		require.ErrorIs(t, err, commerce.ErrInjected)
		got = order(t, e, o.ID)
		require.Equal(t, commerce.StatusPaying, got.Status)
		p := paymentOf(t, e, got.PaymentID)
		assert.Equal(t, payment.StateRequested, p.State, "committed with the claim")
		assert.Equal(t, got.AmountDue, p.Amount)
		assert.Zero(t, e.PG.ApproveCalls(got.PaymentID), "the crash came before the PG was called")

		e.Settle(t) // the restart: the reconciler submits the payment, recovery completes the order
		paid := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPaid, paid.Status)
		for range 2 { // the client's retries answer the same
			again, err := e.Service.Pay(ctx, req)
			require.NoError(t, err)
			assert.Equal(t, paid, again)
		}
		assert.Equal(t, 1, e.PG.ApproveCalls(got.PaymentID))
		assert.Equal(t, 1, e.PG.Charges(got.PaymentID))
		requireStock(t, e, sku, 3, 0, 2)
		e.RequireClean(t)
	}, commerce.WithFaultHook(hook.Func))
}

// TestPayAndTopUpBadTokenChangeNothing: a token the payment package refuses (not UTF-8)
// fails the claim as a whole: the order stays PENDING_PAYMENT and the top-up is not
// recorded, with no payment, so the same request with a good token then succeeds.
func TestPayAndTopUpBadTokenChangeNothing(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		b := newBuyer(t, e, 0, 0)
		o := place(t, e, b, sku, 1, 0)
		req := cardPayment(o, "tok\xff")
		_, err := e.Service.Pay(ctx, req)
		require.ErrorIs(t, err, commerce.ErrInvalidRequest)
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPendingPayment, got.Status)
		payments, err := e.Payments.ByOrder(ctx, o.ID)
		require.NoError(t, err)
		assert.Empty(t, payments)

		assert.Equal(t, commerce.StatusPaid, pay(t, e, o, "tok_visa").Status)

		top := commerce.TopUpRequest{UserID: b.user, Amount: 5_000, Method: payment.MethodCard, Token: "tok\xff", IdempotencyKey: "top"}
		_, err = e.Service.TopUp(ctx, top)
		require.ErrorIs(t, err, commerce.ErrInvalidRequest)
		top.Token = "tok_visa" // another token: a recorded top-up would refuse it as a conflict
		tu, err := e.Service.TopUp(ctx, top)
		require.NoError(t, err)
		assert.Equal(t, commerce.TopUpCompleted, tu.Status)
		payments, err = e.Payments.ByOrder(ctx, tu.ID)
		require.NoError(t, err)
		assert.Len(t, payments, 1)
		assert.Equal(t, 2, e.PG.Stats().Charges, "one charge for the order, one for the top-up")
		e.RequireClean(t)
	})
}
