package commerce_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/errcode"
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
			e.PG.SetFault(pgsim.FaultError) // no answer: the order waits, PAYING
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
		name:  "cancel paid, reward partly spent",
		setup: rewardSpentFixture,
		run:   cancelFixture,
		check: func(t *testing.T, e *commercetest.Env, f *fixture) {
			o := order(t, e, f.order.ID)
			assert.Equal(t, commerce.StatusCancelled, o.Status)
			assert.Empty(t, o.Step)
			requireStock(t, e, f.sku, 10, 0, 0)
			assert.Equal(t, ledger.Balance{}, balance(t, e, f.b.user))
			assert.Equal(t, coupon.StateAvailable, couponState(t, e, f.b.coupon))
			requireRefunded(t, e, o, 16_850)
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

// TestPayAndTopUpBadTokenChangeNothing: a token the payment package refuses (not UTF-8, a
// control character, over 255 characters)
// fails the claim as a whole: the order stays PENDING_PAYMENT and the top-up is not
// recorded, with no payment, so the same request with a good token then succeeds.
func TestPayAndTopUpBadTokenChangeNothing(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 5)
		b := newBuyer(t, e, 0, 0)
		o := place(t, e, b, sku, 1, 0)
		for _, token := range []string{"tok\xff", "tok\x00", strings.Repeat("한", 256)} {
			_, err := e.Service.Pay(ctx, cardPayment(o, token))
			require.ErrorIs(t, err, commerce.ErrInvalidRequest, "%q", token)
		}
		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusPendingPayment, got.Status)
		payments, err := e.Payments.ByOrder(ctx, o.ID)
		require.NoError(t, err)
		assert.Empty(t, payments)

		assert.Equal(t, commerce.StatusPaid, pay(t, e, o, "tok_visa").Status)

		top := commerce.TopUpRequest{UserID: b.user, Amount: 5_000, Method: payment.MethodCard, IdempotencyKey: "top"}
		for _, token := range []string{"tok\xff", "tok\x00"} {
			top.Token = token
			_, err = e.Service.TopUp(ctx, top)
			require.ErrorIs(t, err, commerce.ErrInvalidRequest)
		}
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

// TestBadIdempotencyKeysChangeNothing: a key that is not UTF-8 was accepted and stored as
// U+FFFD, so Pay did not know its own retry ("cannot pay order ... in status PAID"); a key
// ending with a space would be taken by MySQL's collations for the key without it. Both
// are refused by PlaceOrder, Pay and TopUp, and change nothing.
func TestBadIdempotencyKeysChangeNothing(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 1000, 10)
		b := newBuyer(t, e, 0, 0)
		o := place(t, e, b, sku, 1, 0)
		for _, key := range []string{"key-\xff\xfe", "key "} {
			_, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: b.user,
				Lines: []commerce.Line{{ProductID: sku, Qty: 1}}, IdempotencyKey: key})
			require.ErrorIs(t, err, commerce.ErrInvalidRequest, "PlaceOrder %q", key)
			_, err = e.Service.TopUp(ctx, commerce.TopUpRequest{UserID: b.user, Amount: 5_000, Method: payment.MethodCard,
				Token: "tok_visa", IdempotencyKey: key})
			require.ErrorIs(t, err, commerce.ErrInvalidRequest, "TopUp %q", key)
			req := cardPayment(o, "tok_visa")
			req.IdempotencyKey = key
			_, err = e.Service.Pay(ctx, req)
			require.ErrorIs(t, err, commerce.ErrInvalidRequest, "Pay %q", key)
		}
		assert.Equal(t, commerce.StatusPendingPayment, order(t, e, o.ID).Status)
		page, err := e.Service.ListOrders(ctx, b.user, commerce.OrderQuery{})
		require.NoError(t, err)
		assert.Len(t, page.Orders, 1)
		assert.Zero(t, e.PG.Stats().Charges)
		e.RequireClean(t)
	})
}

// cancellingHook records the steps it sees and, at a chosen one, cancels the context of the
// request in progress (the client went away, the server's deadline passed) and lets the
// flow go on with it.
type cancellingHook struct {
	mu     sync.Mutex
	seen   []string
	at     string
	cancel context.CancelFunc
}

func (h *cancellingHook) Func(step string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, step)
	if step == h.at && h.cancel != nil {
		h.cancel()
		h.cancel = nil
	}
	return nil
}

// arm makes the next pass through step cancel the context it returns.
func (h *cancellingHook) arm(step string) context.Context {
	c, cancel := context.WithCancel(ctx)
	h.mu.Lock()
	h.seen, h.at, h.cancel = nil, step, cancel
	h.mu.Unlock()
	return c
}

// TestContextCancelledAtEveryStep is TestCrashAtEveryStep with the request's context
// cancelled at each step boundary instead of the process dying there: the flow goes on
// with a dead context (its transaction rolls back or its commit fails, its calls fail),
// then the reconciler and Recover run and the client repeats its request. The end state
// must be exactly that of an uninterrupted run, with every charge and refund made once.
func TestContextCancelledAtEveryStep(t *testing.T) {
	runs := map[string]func(ctx context.Context, e *commercetest.Env, f *fixture) error{
		"pay approved": func(ctx context.Context, e *commercetest.Env, f *fixture) error {
			_, err := e.Service.Pay(ctx, commerce.PayRequest{OrderID: f.order.ID, UserID: f.b.user, Method: payment.MethodCard,
				Token: "tok_ok", IdempotencyKey: "pay"})
			return err
		},
		"pay declined": func(ctx context.Context, e *commercetest.Env, f *fixture) error {
			_, err := e.Service.Pay(ctx, commerce.PayRequest{OrderID: f.order.ID, UserID: f.b.user, Method: payment.MethodCard,
				Token: pgsim.TokenDecline, IdempotencyKey: "pay"})
			return err
		},
		"late approval refunded": func(ctx context.Context, e *commercetest.Env, f *fixture) error {
			if _, err := e.Reconciler.Reconcile(ctx); err != nil {
				return err
			}
			_, err := e.Service.Recover(ctx)
			return err
		},
		"cancel unpaid": func(ctx context.Context, e *commercetest.Env, f *fixture) error {
			_, err := e.Service.Cancel(ctx, f.order.ID, commerce.Actor{UserID: f.b.user})
			return err
		},
		"expire": func(ctx context.Context, e *commercetest.Env, _ *fixture) error {
			_, err := e.Service.Expire(ctx)
			return err
		},
		"top-up": func(ctx context.Context, e *commercetest.Env, f *fixture) error {
			_, err := e.Service.TopUp(ctx, f.topUp)
			return err
		},
	}
	runs["cancel paid"] = runs["cancel unpaid"]
	runs["cancel paid, reward partly spent"] = runs["cancel unpaid"]
	hook := &cancellingHook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		for _, c := range crashCases {
			run := runs[c.name]
			require.NotNil(t, run, c.name)
			t.Run(c.name, func(t *testing.T) {
				f := c.setup(t, e)
				require.NoError(t, run(hook.arm(""), e, f))
				hook.mu.Lock()
				steps := slices.Compact(slices.Clone(hook.seen))
				hook.mu.Unlock()
				c.check(t, e, f)
				for _, step := range steps {
					t.Run(step, func(t *testing.T) {
						f := c.setup(t, e)
						if err := run(hook.arm(step), e, f); err != nil {
							assert.NotErrorIs(t, err, commerce.ErrInvalidState, "a dead context is no business answer")
							t.Logf("with the context cancelled at %s: %v", step, err)
						}
						e.Settle(t)
						require.NoError(t, run(ctx, e, f), "the client's retry (or another pass)")
						e.Settle(t)
						c.check(t, e, f)
						e.RequireClean(t)
					})
				}
			})
		}
		e.RequireDelivered(t)
	}, commerce.WithFaultHook(hook.Func))
}

// sleepingHook sleeps at a chosen step (once): a request whose deadline passes there.
type sleepingHook struct {
	mu  sync.Mutex
	at  string
	nap time.Duration
}

func (h *sleepingHook) Func(step string) error {
	h.mu.Lock()
	nap := time.Duration(0)
	if step == h.at {
		nap, h.at = h.nap, ""
	}
	h.mu.Unlock()
	time.Sleep(nap)
	return nil
}

func (h *sleepingHook) sleepAt(step string, nap time.Duration) {
	h.mu.Lock()
	h.at, h.nap = step, nap
	h.mu.Unlock()
}

// TestDeadlineInsideATransaction: a request whose deadline passes inside one of the
// flow's transactions, after its last statement and before its commit (a slow server, a
// slow leaf), fails with an error matching context.DeadlineExceeded, which a server answers
// 503 with Retry-After: never the database driver's "transaction has already been committed
// or rolled back", which no one classifies (a 500). The retry then finishes the flow.
func TestDeadlineInsideATransaction(t *testing.T) {
	hook := &sleepingHook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 20)
		b := newBuyer(t, e, 10_000, 0)
		for _, c := range []struct {
			step string
			prep func() commerce.Order
			run  func(ctx context.Context, o commerce.Order) (commerce.Order, error)
			want commerce.Status
		}{
			{commerce.StepPlaceCommit, func() commerce.Order { return commerce.Order{} },
				func(ctx context.Context, _ commerce.Order) (commerce.Order, error) {
					return e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: b.user, Points: 500,
						Lines: []commerce.Line{{ProductID: sku, Qty: 1}}, IdempotencyKey: "deadline"})
				}, commerce.StatusPendingPayment},
			{commerce.StepPayCommit, func() commerce.Order { return place(t, e, b, sku, 1, 500) },
				func(ctx context.Context, o commerce.Order) (commerce.Order, error) {
					return e.Service.Pay(ctx, cardPayment(o, "tok_ok"))
				}, commerce.StatusPaid},
			{commerce.StepCompensate, func() commerce.Order { return place(t, e, b, sku, 1, 500) },
				func(ctx context.Context, o commerce.Order) (commerce.Order, error) {
					return e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
				}, commerce.StatusCancelled},
			{commerce.StepCancelCommit, func() commerce.Order { return pay(t, e, place(t, e, b, sku, 1, 500), "tok_ok") },
				func(ctx context.Context, o commerce.Order) (commerce.Order, error) {
					return e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
				}, commerce.StatusCancelled},
		} {
			t.Run(c.step, func(t *testing.T) {
				o := c.prep()
				dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				defer cancel()
				hook.sleepAt(c.step, 400*time.Millisecond)
				_, err := c.run(dctx, o)
				require.ErrorIs(t, err, context.DeadlineExceeded)
				assert.Equal(t, errcode.DeadlineExceeded, errcode.CodeOf(err))
				e.Settle(t)
				got, err := c.run(ctx, o)
				require.NoError(t, err)
				assert.Equal(t, c.want, got.Status)
				assert.Empty(t, got.Step)
			})
		}
		e.RequireClean(t)
	}, commerce.WithFaultHook(hook.Func))
}

// TestCrashDuringRecovery kills each flow at each of its step boundaries, then kills the
// recovery that follows at each step boundary it passes, then recovers for good: two
// crashes in a row end exactly as an uninterrupted run, every charge and refund made once.
func TestCrashDuringRecovery(t *testing.T) {
	hook := &commercetest.Hook{}
	settle := func(e *commercetest.Env) {
		_, _ = e.Reconciler.Reconcile(ctx)
		_, _ = e.Service.Recover(ctx)
	}
	for _, c := range commercetest.Configs[:2] { // SQLite, and MySQL with the Redis inventory outside the transactions
		t.Run(c.Name, func(t *testing.T) {
			e := c.New(t, commerce.WithFaultHook(hook.Func))
			for _, cc := range crashCases {
				t.Run(cc.name, func(t *testing.T) {
					f := cc.setup(t, e)
					steps := commercetest.Steps(hook, func() { require.NoError(t, cc.run(e, f)) })
					for _, first := range steps {
						f := cc.setup(t, e)
						hook.FailAt(first)
						require.ErrorIs(t, cc.run(e, f), commerce.ErrInjected)
						again := commercetest.Steps(hook, func() { settle(e) })
						// The recovery's steps, learned on this order, replayed on fresh ones.
						for _, second := range again {
							t.Run(first+"/"+second, func(t *testing.T) {
								f := cc.setup(t, e)
								hook.FailAt(first)
								require.ErrorIs(t, cc.run(e, f), commerce.ErrInjected)
								hook.FailAt(second)
								settle(e)
								hook.FailAt("")
								e.Settle(t)
								require.NoError(t, cc.run(e, f), "the client's retry (or another pass)")
								cc.check(t, e, f)
								e.RequireClean(t)
							})
						}
						require.NoError(t, cc.run(e, f))
						e.Settle(t)
					}
				})
			}
		})
	}
}

// rewardSpentFixture pays 2 units at 10,000 with a 3,000 coupon and 100 of the buyer's
// 1,000 points (due 16,900, reward 169), then has the buyer spend all but 19 of their
// points: the cancellation claws back 19, gives back no points (100 − the shortfall of 150)
// and refunds 16,850 of the payment.
func rewardSpentFixture(t *testing.T, e *commercetest.Env) *fixture {
	f := &fixture{b: newBuyer(t, e, 1_000, 3_000)}
	f.sku, f.order = spentOrder(t, e, f.b, 2, 100, 1_050)
	require.Equal(t, int64(169), f.order.Reward)
	return f
}
