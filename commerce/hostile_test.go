package commerce_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
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
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// A paid order cancelled by four requests at once while two Recover passes run: one
// cancellation, one refund, every compensation once.
func TestConcurrentCancelsOfAPaidOrder(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 5_000, 3_000)
		o := pay(t, e, place(t, e, b, sku, 2, 2_000), "tok_ok")
		require.Equal(t, commerce.StatusPaid, o.Status)

		testkit.Together(6, func(i int) {
			if i >= 4 {
				_, err := e.Service.Recover(ctx)
				assert.NoError(t, err)
				return
			}
			got, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
			if assert.NoError(t, err) {
				assert.Contains(t, []commerce.Status{commerce.StatusCancelled, commerce.StatusCancelling}, got.Status)
			}
		})
		e.Settle(t)

		got := order(t, e, o.ID)
		assert.Equal(t, commerce.StatusCancelled, got.Status)
		assert.Empty(t, got.Step)
		requireStock(t, e, sku, 10, 0, 0)
		assert.Equal(t, ledger.Balance{Available: 5_000, Total: 5_000}, balance(t, e, b.user))
		assert.Equal(t, coupon.StateAvailable, couponState(t, e, b.coupon))
		assert.Equal(t, payment.StateRefunded, paymentOf(t, e, o.PaymentID).State)
		assert.Equal(t, 1, e.PG.Charges(o.PaymentID))
		assert.Equal(t, 1, e.PG.Stats().Cancels)
		assert.Equal(t, o.AmountDue, e.PG.Stats().CanceledAmount)
		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}

// Eight payments of one order with eight different keys at once (half of them with a
// declined card): exactly one claims the order, the gateway is asked once, the others are
// refused with *StateError and change nothing.
func TestConcurrentPaysWithDifferentKeys(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		for _, token := range []string{"tok_ok", "tok_decline"} {
			sku := e.Product(t, 10_000, 10)
			b := newBuyer(t, e, 5_000, 3_000)
			o := place(t, e, b, sku, 2, 2_000)
			var won, refused int
			results := make([]error, 8)
			testkit.Together(len(results), func(i int) {
				tok := token
				if i%2 == 1 {
					tok = "tok_other"
				}
				_, results[i] = e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: b.user,
					Method: payment.MethodCard, Token: tok, IdempotencyKey: fmt.Sprintf("key-%d", i)})
			})
			for _, err := range results {
				var se *commerce.StateError
				switch {
				case err == nil:
					won++
				case errors.As(err, &se):
					refused++
				default:
					t.Errorf("unexpected: %v", err)
				}
			}
			assert.Equal(t, 1, won, "exactly one payment claims the order")
			assert.Equal(t, 7, refused)
			got := order(t, e, o.ID)
			assert.Empty(t, got.Step)
			assert.Equal(t, 1, e.PG.ApproveCalls(got.PaymentID))
			if got.Status == commerce.StatusPaid {
				requireStock(t, e, sku, 8, 0, 2)
			} else {
				assert.Equal(t, commerce.StatusPaymentFailed, got.Status)
				requireStock(t, e, sku, 10, 0, 0)
			}
		}
		e.RequireClean(t)
	})
}

// blockingHook holds the first flow that reaches step inside it (in the flow's
// transaction, for the in-transaction steps) until released; every other pass goes on.
type blockingHook struct {
	step    string
	fired   atomic.Bool
	blocked chan struct{}
	release chan struct{}
}

func newBlockingHook(step string) *blockingHook {
	return &blockingHook{step: step, blocked: make(chan struct{}), release: make(chan struct{})}
}

func (h *blockingHook) Func(step string) error {
	if step == h.step && h.fired.CompareAndSwap(false, true) {
		close(h.blocked)
		<-h.release
	}
	return nil
}

// TestOneOrderNeverWaitsForAnother holds one order's transaction open at each
// in-transaction step of the flows (placing, completing a payment, compensating, cancelling
// a paid order) and meanwhile runs the whole checkout of another user on another product:
// place, pay, cancel paid, place and cancel unpaid. On InnoDB none of it may wait for the
// held transaction's locks (a gap lock, an index scan, a shared row): it must finish well
// within the lock wait timeout.
func TestOneOrderNeverWaitsForAnother(t *testing.T) {
	held := []struct {
		step string
		run  func(e *commercetest.Env, f *fixture) error
		prep func(t *testing.T, e *commercetest.Env, f *fixture)
	}{
		{step: commerce.StepPlaceCommit, run: func(e *commercetest.Env, f *fixture) error {
			_, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: f.b.user, CouponID: f.b.coupon, Points: 2_000,
				Lines: []commerce.Line{{ProductID: f.sku, Qty: 2}}, IdempotencyKey: "held"})
			return err
		}},
		{step: commerce.StepPayClaim, run: payFixture("tok_ok"), prep: func(t *testing.T, e *commercetest.Env, f *fixture) {
			f.order = place(t, e, f.b, f.sku, 2, 2_000)
		}},
		{step: commerce.StepPayCommit, run: payFixture("tok_ok"), prep: func(t *testing.T, e *commercetest.Env, f *fixture) {
			f.order = place(t, e, f.b, f.sku, 2, 2_000)
		}},
		{step: commerce.StepCompensate, run: cancelFixture, prep: func(t *testing.T, e *commercetest.Env, f *fixture) {
			f.order = place(t, e, f.b, f.sku, 2, 2_000)
		}},
		{step: commerce.StepCancelCommit, run: cancelFixture, prep: func(t *testing.T, e *commercetest.Env, f *fixture) {
			f.order = pay(t, e, place(t, e, f.b, f.sku, 2, 2_000), "tok_ok")
		}},
	}
	for _, c := range commercetest.Configs[1:] { // the MySQL ones
		t.Run(c.Name, func(t *testing.T) {
			for _, h := range held {
				t.Run(h.step, func(t *testing.T) {
					hook := newBlockingHook(h.step)
					e := c.New(t, commerce.WithFaultHook(hook.Func))
					a := &fixture{sku: e.Product(t, 10_000, 10), b: newBuyer(t, e, 5_000, 3_000)}
					other := &fixture{sku: e.Product(t, 10_000, 5), b: newBuyer(t, e, 5_000, 3_000)}
					if e.Stock != nil { // Redis holds the stock: even the same product must not wait
						other.sku = a.sku
					}
					if h.prep != nil {
						h.prep(t, e, a)
					}
					done := make(chan error, 1)
					go func() { done <- h.run(e, a) }()
					<-hook.blocked

					bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
					err := func() error {
						o, err := e.Service.PlaceOrder(bctx, commerce.PlaceOrderRequest{UserID: other.b.user, CouponID: other.b.coupon,
							Points: 2_000, Lines: []commerce.Line{{ProductID: other.sku, Qty: 2}}, IdempotencyKey: "other"})
						if err != nil {
							return fmt.Errorf("place: %w", err)
						}
						if o, err = e.Service.Pay(bctx, cardPayment(o, "tok_ok")); err != nil || o.Status != commerce.StatusPaid {
							return fmt.Errorf("pay: %v (%s)", err, o.Status)
						}
						if o, err = e.Service.Cancel(bctx, o.ID, commerce.Actor{UserID: other.b.user}); err != nil || o.Status != commerce.StatusCancelled {
							return fmt.Errorf("cancel paid: %v (%s)", err, o.Status)
						}
						o, err = e.Service.PlaceOrder(bctx, commerce.PlaceOrderRequest{UserID: other.b.user, CouponID: other.b.coupon,
							Lines: []commerce.Line{{ProductID: other.sku, Qty: 1}}, IdempotencyKey: "other-2"})
						if err != nil {
							return fmt.Errorf("place again: %w", err)
						}
						if o, err = e.Service.Cancel(bctx, o.ID, commerce.Actor{UserID: other.b.user}); err != nil || o.Status != commerce.StatusCancelled {
							return fmt.Errorf("cancel unpaid: %v (%s)", err, o.Status)
						}
						return nil
					}()
					close(hook.release)
					require.NoError(t, <-done, "the held flow")
					require.NoError(t, err, "another user's checkout waited for the held transaction")
					if other.sku != a.sku {
						requireStock(t, e, other.sku, 5, 0, 0)
					}
					e.RequireClean(t)
				})
			}
		})
	}
}

// Redis restarts empty (its data lost) while orders are in every state: placing answers
// ErrUnavailable and takes nothing; paying, cancelling (paid or not) and expiry either
// answer ErrUnavailable or finish with the stock work left to recovery, never a wrong
// business answer; once the journal rebuilt Redis, the retries and Recover end exactly as
// without the loss.
func TestRedisEmptiedMidCheckout(t *testing.T) {
	e := commercetest.MySQL(t)
	sku := e.Product(t, 10_000, 20)
	b := newBuyer(t, e, 10_000, 0)
	toPay := place(t, e, b, sku, 2, 1_000)
	toCancelPaid := pay(t, e, place(t, e, b, sku, 3, 1_000), "tok_ok")
	require.Equal(t, commerce.StatusPaid, toCancelPaid.Status)
	toCancel := place(t, e, b, sku, 4, 1_000)
	requireStock(t, e, sku, 11, 6, 3)
	before := balance(t, e, b.user)

	require.NoError(t, e.Redis.FlushDB(ctx).Err())

	retried := func(what string, err error) {
		t.Helper()
		if err != nil {
			require.ErrorIs(t, err, errcode.ErrUnavailable, what)
		}
	}
	_, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: b.user, Lines: []commerce.Line{{ProductID: sku, Qty: 1}},
		Points: 500, IdempotencyKey: "during"})
	require.ErrorIs(t, err, errcode.ErrUnavailable, "place")
	assert.Equal(t, before, balance(t, e, b.user), "a refused place holds no points")
	_, err = e.Service.Pay(ctx, cardPayment(toPay, "tok_ok"))
	retried("pay", err)
	_, err = e.Service.Cancel(ctx, toCancelPaid.ID, commerce.Actor{UserID: b.user})
	retried("cancel paid", err)
	_, err = e.Service.Cancel(ctx, toCancel.ID, commerce.Actor{UserID: b.user})
	retried("cancel unpaid", err)
	_, err = e.Service.Recover(ctx)
	retried("recover", err)

	_, err = e.Stock.Heal(ctx)
	require.NoError(t, err)
	e.Settle(t)
	got, err := e.Service.Pay(ctx, cardPayment(toPay, "tok_ok"))
	require.NoError(t, err)
	assert.Equal(t, commerce.StatusPaid, got.Status)
	got, err = e.Service.Cancel(ctx, toCancelPaid.ID, commerce.Actor{UserID: b.user})
	require.NoError(t, err)
	assert.Equal(t, commerce.StatusCancelled, got.Status)
	got, err = e.Service.Cancel(ctx, toCancel.ID, commerce.Actor{UserID: b.user})
	require.NoError(t, err)
	assert.Equal(t, commerce.StatusCancelled, got.Status)
	e.Settle(t)
	for _, id := range []string{toPay.ID, toCancelPaid.ID, toCancel.ID} {
		assert.Empty(t, order(t, e, id).Step, id)
	}
	requireStock(t, e, sku, 18, 0, 2)
	assert.Equal(t, ledger.Balance{Available: 9_190, Total: 9_190}, balance(t, e, b.user)) // 1,000 spent, 190 earned
	assert.Equal(t, 2, e.PG.Stats().Charges)
	e.RequireClean(t)
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

// Payments arrive just as their orders fall due, while expiry sweeps run and the clock
// crosses the deadline: each order ends PAID or EXPIRED, never both nor neither, with its
// stock, points and coupon exactly as that outcome says.
func TestPayAndExpireAtTheDeadline(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		const n = 24
		sku := e.Product(t, 10_000, n)
		orders := make([]commerce.Order, n)
		buyers := make([]buyer, n)
		for i := range orders {
			buyers[i] = newBuyer(t, e, 1_000, 1_000)
			orders[i] = place(t, e, buyers[i], sku, 1, 1_000)
		}
		e.Clock.Advance(commerce.DefaultOrderExpiry - time.Millisecond)
		var deadline sync.Once
		e.Gateway.BeforeApprove = func() { // the deadline passes while the first payments are at the PG
			deadline.Do(func() { e.Clock.Advance(time.Millisecond) })
			time.Sleep(5 * time.Millisecond)
		}
		testkit.Together(2*n, func(i int) {
			switch {
			case i%2 == 0:
				_, err := e.Service.Expire(ctx)
				assert.NoError(t, err)
			default:
				o := orders[i/2]
				got, err := e.Service.Pay(ctx, cardPayment(o, "tok_ok"))
				if err == nil {
					assert.Equal(t, commerce.StatusPaid, got.Status)
				} else if !errors.Is(err, commerce.ErrOrderExpired) && !errors.Is(err, commerce.ErrInvalidState) {
					t.Errorf("pay %s: %v", o.ID, err)
				}
			}
		})
		_, err := e.Service.Expire(ctx)
		require.NoError(t, err)
		e.Settle(t)
		var paid int64
		for i, o := range orders {
			got := order(t, e, o.ID)
			assert.Empty(t, got.Step)
			switch got.Status {
			case commerce.StatusPaid:
				paid++
				assert.Equal(t, ledger.Balance{Available: 80, Total: 80}, balance(t, e, buyers[i].user))
				assert.Equal(t, coupon.StateUsed, couponState(t, e, buyers[i].coupon))
				assert.Equal(t, 1, e.PG.Charges(got.PaymentID))
			case commerce.StatusExpired:
				assert.Equal(t, ledger.Balance{Available: 1_000, Total: 1_000}, balance(t, e, buyers[i].user))
				assert.Equal(t, coupon.StateAvailable, couponState(t, e, buyers[i].coupon))
				if got.PaymentID != "" {
					assert.Zero(t, e.PG.Charges(got.PaymentID))
				}
			default:
				t.Errorf("order %s ended %s", o.ID, got.Status)
			}
		}
		t.Logf("%d paid, %d expired", paid, n-paid)
		requireStock(t, e, sku, n-paid, 0, paid)
		assert.Equal(t, int(paid), e.PG.Stats().Charges)
		e.RequireClean(t)
	})
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

// Every refused PlaceOrder, on every configuration (with Redis the units are reserved
// before the transaction that refuses), changes nothing: no units held, no buyer allowance
// used, no points held, the coupon untouched, no order; the same user then buys up to the
// buyer limit at once.
func TestRefusedPlaceChangesNothing(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		_, err := e.Service.SetStock(ctx, sku, 10, 3)
		require.NoError(t, err)
		b := newBuyer(t, e, 1_000, 2_000)
		other := newBuyer(t, e, 0, 2_000)
		for name, c := range map[string]struct {
			req  commerce.PlaceOrderRequest
			want error
		}{
			"points above balance": {commerce.PlaceOrderRequest{Points: 1_001}, commerce.ErrInsufficientPoints},
			"points above order":   {commerce.PlaceOrderRequest{Points: 30_001}, commerce.ErrInvalidRequest},
			"huge points":          {commerce.PlaceOrderRequest{Points: 1 << 62}, commerce.ErrInvalidRequest},
			"another's coupon":     {commerce.PlaceOrderRequest{CouponID: other.coupon}, commerce.ErrCouponUnusable},
			"unknown coupon":       {commerce.PlaceOrderRequest{CouponID: "nope"}, commerce.ErrCouponUnusable},
			"over buyer limit":     {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: 4}}}, commerce.ErrBuyerLimit},
			"unknown product line": {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: 1}, {ProductID: "nope", Qty: 1}}}, commerce.ErrProductNotFound},
			"negative quantity":    {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: -1}}}, commerce.ErrInvalidRequest},
			"duplicates past 999": {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: 999}, {ProductID: sku, Qty: 1}}},
				commerce.ErrInvalidRequest},
			"coupon covers all but points": {commerce.PlaceOrderRequest{Lines: []commerce.Line{{ProductID: sku, Qty: 1}}, CouponID: b.coupon,
				Points: 8_000}, commerce.ErrPaymentRule},
		} {
			t.Run(name, func(t *testing.T) {
				req := c.req
				req.UserID, req.IdempotencyKey = b.user, e.ID("key")
				if req.Lines == nil {
					req.Lines = []commerce.Line{{ProductID: sku, Qty: 3}}
				}
				_, err := e.Service.PlaceOrder(ctx, req)
				require.ErrorIs(t, err, c.want)
				requireStock(t, e, sku, 10, 0, 0)
				assert.Equal(t, ledger.Balance{Available: 1_000, Total: 1_000}, balance(t, e, b.user))
				assert.Equal(t, coupon.StateAvailable, couponState(t, e, b.coupon))
				assert.Equal(t, coupon.StateAvailable, couponState(t, e, other.coupon))
				_, err = e.Service.OrderByKey(ctx, b.user, req.IdempotencyKey)
				require.ErrorIs(t, err, commerce.ErrOrderNotFound)
			})
		}
		o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: b.user, IdempotencyKey: "full",
			Lines: []commerce.Line{{ProductID: sku, Qty: 3}}, CouponID: b.coupon, Points: 1_000})
		require.NoError(t, err, "the buyer limit and the holds are intact")
		requireStock(t, e, sku, 7, 3, 0)
		pay(t, e, o, "tok_ok")
		e.RequireClean(t)
	})
}

// TestDisconnectedPlaceHoldsNothingWithoutAnOrder: a client that goes away while its
// PlaceOrder is in its transaction (the request's context cancelled) must not leave units
// held by no order. With the Redis inventory the units are reserved before that
// transaction; were the transaction abandoned with the context, the reservation would stay
// held until its deadline with no order to show for it: invisible to the unpaid caps, which
// one user could then bypass by disconnecting from every request, and to the audit.
func TestDisconnectedPlaceHoldsNothingWithoutAnOrder(t *testing.T) {
	hook := &cancellingHook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		user := newBuyer(t, e, 0, 0).user
		req := func(key string) commerce.PlaceOrderRequest {
			return commerce.PlaceOrderRequest{UserID: user, Lines: []commerce.Line{{ProductID: sku, Qty: 2}}, IdempotencyKey: key}
		}
		for _, key := range []string{"k1", "k2", "k3"} {
			// Whatever the answer, no one hears it; the first fits the cap, the others not.
			_, err := e.Service.PlaceOrder(hook.arm(commerce.StepPlaceCommit), req(key))
			t.Logf("%s: %v", key, err)
		}
		hook.arm("")
		st := stock(t, e, sku)
		assert.LessOrEqual(t, st.Reserved, int64(2), "the unpaid cap of 2 units holds")
		e.RequireClean(t) // every unit reserved belongs to an order

		// The client's retries find what its first attempts did.
		o, err := e.Service.PlaceOrder(ctx, req("k1"))
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusPendingPayment, o.Status)
		for _, key := range []string{"k2", "k3"} {
			_, err = e.Service.PlaceOrder(ctx, req(key))
			require.Error(t, err) // the cap again, or with Redis the key its refused attempt voided
			if !errors.Is(err, commerce.ErrIdempotencyConflict) {
				require.ErrorIs(t, err, commerce.ErrUnpaidLimit)
			}
		}
		requireStock(t, e, sku, 8, 2, 0)
		e.RequireClean(t)
	}, commerce.WithFaultHook(hook.Func), commerce.WithUnpaidLimits(2, 0))
}

// TestDisconnectedCancelFreesItsUnits: with the Redis inventory an unpaid order's units are
// released, and a paid one's returned, right after the final transition commits. A client
// that goes away at that moment must not leave them held by the closed order until the
// recovery loop's next pass (WithRecovery: 30 s by default): the order's outcome is decided,
// and freeing its units does not depend on who asked for it.
func TestDisconnectedCancelFreesItsUnits(t *testing.T) {
	hook := &cancellingHook{}
	e := commercetest.MySQL(t, commerce.WithFaultHook(hook.Func))
	sku := e.Product(t, 10_000, 10)
	b := newBuyer(t, e, 0, 0)
	unpaid := place(t, e, b, sku, 2, 0)
	paid := pay(t, e, place(t, e, b, sku, 3, 0), "tok_ok")
	requireStock(t, e, sku, 5, 2, 3)
	for _, o := range []commerce.Order{unpaid, paid} {
		_, err := e.Service.Cancel(hook.arm(commerce.StepStockPending), o.ID, commerce.Actor{UserID: b.user})
		t.Logf("cancel %s: %v", o.ID, err)
		assert.Empty(t, order(t, e, o.ID).Step, "nothing left for recovery")
	}
	hook.arm("")
	requireStock(t, e, sku, 10, 0, 0)
	e.RequireClean(t)
}

// Orders left PAYING by a PG that did not answer (some approved meanwhile, some declined),
// then three Recover passes and every client's replay of its Pay all at once: each order
// is completed or failed once, charged at most once, its holds posted or given back.
func TestRecoverRacesRecoverAndReplays(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		const n = 12
		sku := e.Product(t, 10_000, n)
		orders := make([]commerce.Order, n)
		buyers := make([]buyer, n)
		token := func(i int) string {
			if i%3 == 0 {
				return pgsim.TokenDecline
			}
			return "tok_ok"
		}
		for i := range orders {
			buyers[i] = newBuyer(t, e, 1_000, 1_000)
			orders[i] = place(t, e, buyers[i], sku, 1, 1_000)
			e.PG.InjectFault("pay-"+orders[i].ID, pgsim.FaultLostResponse, 1) // processed, answer lost
			got, err := e.Service.Pay(ctx, cardPayment(orders[i], token(i)))
			require.NoError(t, err)
			require.Equal(t, commerce.StatusPaying, got.Status)
		}
		_, err := e.Reconciler.Reconcile(ctx)
		require.NoError(t, err)
		testkit.Together(n+3, func(i int) {
			if i >= n {
				_, err := e.Service.Recover(ctx)
				assert.NoError(t, err)
				return
			}
			_, err := e.Service.Pay(ctx, cardPayment(orders[i], token(i)))
			assert.NoError(t, err)
		})
		e.Settle(t)
		var paid int64
		for i, o := range orders {
			got := order(t, e, o.ID)
			assert.Empty(t, got.Step)
			if i%3 == 0 {
				assert.Equal(t, commerce.StatusPaymentFailed, got.Status)
				assert.Equal(t, ledger.Balance{Available: 1_000, Total: 1_000}, balance(t, e, buyers[i].user))
				assert.Equal(t, coupon.StateAvailable, couponState(t, e, buyers[i].coupon))
				continue
			}
			paid++
			assert.Equal(t, commerce.StatusPaid, got.Status)
			assert.Equal(t, 1, e.PG.Charges(got.PaymentID))
			assert.Equal(t, ledger.Balance{Available: 80, Total: 80}, balance(t, e, buyers[i].user))
			assert.Equal(t, coupon.StateUsed, couponState(t, e, buyers[i].coupon))
		}
		requireStock(t, e, sku, n-paid, 0, paid)
		assert.Equal(t, int(paid), e.PG.Stats().Charges)
		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}
