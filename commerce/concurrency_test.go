package commerce_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// flashSale has buyers race for units, each placing an order of one unit with a coupon of
// 1,000 and 500 points, and paying the rest by card. Exactly `units` orders must be paid,
// every other buyer turned away with ErrOutOfStock, and the audit clean.
func flashSale(t *testing.T, e *commercetest.Env, buyers, units, workers int) {
	sku := e.Product(t, 10_000, int64(units))
	tpl := e.CouponTemplate(t, 1_000)
	bs := make([]buyer, buyers)
	testkit.Parallel(buyers, workers, func(i int) {
		user := e.ID("buyer")
		e.GivePoints(t, user, 800)
		bs[i] = buyer{user: user, coupon: e.GiveCoupon(t, tpl, user)}
	})

	var paid, soldOut atomic.Int64
	testkit.Parallel(buyers, workers, func(i int) {
		b := bs[i]
		o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: b.user, CouponID: b.coupon, Points: 500,
			Lines: []commerce.Line{{ProductID: sku, Qty: 1}}, IdempotencyKey: "sale"})
		if errors.Is(err, commerce.ErrOutOfStock) {
			soldOut.Add(1)
			return
		}
		if !assert.NoError(t, err) {
			return
		}
		o, err = e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: b.user, Method: payment.MethodCard,
			Token: "tok_ok", IdempotencyKey: "sale"})
		if assert.NoError(t, err) && assert.Equal(t, commerce.StatusPaid, o.Status) {
			paid.Add(1)
		}
	})

	assert.Equal(t, int64(units), paid.Load())
	assert.Equal(t, int64(buyers-units), soldOut.Load())
	requireStock(t, e, sku, 0, 0, int64(units))
	assert.Equal(t, units, e.PG.Stats().Charges)
	assert.Equal(t, int64(units)*8_500, totalCharged(e))
	rep := e.RequireClean(t)
	assert.Equal(t, units, rep.Orders)
	e.RequireDelivered(t)
}

func totalCharged(e *commercetest.Env) int64 {
	var sum int64
	err := e.DB.NewSelect().Table("payment_payments").ColumnExpr("COALESCE(SUM(amount), 0)").
		Where("state = ?", payment.StateApproved).Scan(ctx, &sum)
	if err != nil {
		panic(err)
	}
	return sum
}

// TestFlashSale: 2,000 buyers for 100 units on MySQL + Redis + Kafka, and on MySQL with the
// SQL inventory (every reservation a row lock on the one hot stock row).
func TestFlashSale(t *testing.T) {
	t.Run("MySQL+Redis+Kafka", func(t *testing.T) { flashSale(t, commercetest.MySQL(t), 2_000, 100, 64) })
	t.Run("MySQL+Kafka", func(t *testing.T) { flashSale(t, commercetest.MySQLSQLInventory(t), 2_000, 100, 64) })
}

// TestFlashSaleSQLite: the embedded configuration serialises every writer on one
// connection; 300 buyers for 30 units still interleave at every statement.
func TestFlashSaleSQLite(t *testing.T) {
	flashSale(t, commercetest.SQLite(t), 300, 30, 16)
}

// Pay and Cancel race on the same orders (each twice), then Cancel and expiry on others:
// exactly one wins each order, and whatever the outcome the store is consistent.
func TestPayCancelExpireRace(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		const n = 30
		sku := e.Product(t, 10_000, 2*n)
		place := func() []commerce.Order {
			orders := make([]commerce.Order, n)
			for i := range orders {
				orders[i] = place(t, e, newBuyer(t, e, 1_000, 1_000), sku, 1, 1_000)
			}
			return orders
		}
		ok := func(err error) bool {
			return err == nil || errors.Is(err, commerce.ErrInvalidState) || errors.Is(err, commerce.ErrOrderExpired)
		}
		paying := place()
		testkit.Parallel(4*n, 12, func(i int) {
			o := paying[i/4]
			var err error
			if i%2 == 0 {
				_, err = e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: o.UserID, Method: payment.MethodCard,
					Token: "tok_ok", IdempotencyKey: "race"})
			} else {
				_, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: o.UserID})
			}
			assert.True(t, ok(err), "order %s: %v", o.ID, err)
		})
		e.Clock.Advance(commerce.DefaultOrderExpiry)
		expiring := place()
		e.Clock.Advance(commerce.DefaultOrderExpiry)
		testkit.Parallel(2*n, 12, func(i int) {
			o := expiring[i/2]
			var err error
			if i%2 == 0 {
				_, err = e.Service.Expire(ctx)
			} else {
				_, err = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: o.UserID})
			}
			assert.True(t, ok(err), "order %s: %v", o.ID, err)
		})
		_, err := e.Service.Recover(ctx)
		require.NoError(t, err)

		var paid int64
		for _, o := range append(paying, expiring...) {
			got := order(t, e, o.ID)
			require.Empty(t, got.Step)
			b := balance(t, e, o.UserID)
			switch got.Status {
			case commerce.StatusPaid:
				paid++
				assert.Equal(t, ledger.Balance{Available: 80, Total: 80}, b) // 8,000 paid by card: 80 reward
			case commerce.StatusCancelled, commerce.StatusExpired:
				assert.Equal(t, ledger.Balance{Available: 1_000, Total: 1_000}, b)
			default:
				t.Errorf("order %s ended %s", o.ID, got.Status)
			}
		}
		requireStock(t, e, sku, 2*n-paid, 0, paid) // units of cancelled paid orders were returned
		e.RequireClean(t)
	})
}

// Concurrent duplicates of one PlaceOrder make one order and one reservation.
func TestConcurrentPlaceReplays(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		b := newBuyer(t, e, 1_000, 1_000)
		ids := make([]string, 16)
		testkit.Parallel(len(ids), 8, func(i int) {
			o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: b.user, CouponID: b.coupon, Points: 1_000,
				Lines: []commerce.Line{{ProductID: sku, Qty: 3}}, IdempotencyKey: "same"})
			if assert.NoError(t, err) {
				ids[i] = o.ID
			}
		})
		for _, id := range ids {
			assert.Equal(t, ids[0], id)
		}
		requireStock(t, e, sku, 7, 3, 0)
		assert.Equal(t, ledger.Balance{Held: 1_000, Total: 1_000}, balance(t, e, b.user))
		e.RequireClean(t)
	})
}

// A paid order cancelled by four requests at once while two Recover passes run: one
// cancellation, one refund, every compensation once.
func TestConcurrentCancelsOfAPaidOrder(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		f := placed(t, e)
		o := pay(t, e, f.order, "tok_ok")
		require.Equal(t, commerce.StatusPaid, o.Status)

		testkit.Together(6, func(i int) {
			if i >= 4 {
				_, err := e.Service.Recover(ctx)
				assert.NoError(t, err)
				return
			}
			got, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: f.b.user})
			if assert.NoError(t, err) {
				assert.Contains(t, []commerce.Status{commerce.StatusCancelled, commerce.StatusCancelling}, got.Status)
			}
		})
		e.Settle(t)

		requireGivenBack(t, e, f, commerce.StatusCancelled)
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

// Payments arrive just as their orders fall due, while expiry sweeps run and the clock
// crosses the deadline: each order ends PAID or EXPIRED, never both nor neither, with its
// stock, points and coupon exactly as that outcome says.
func TestPayAndExpireAtTheDeadline(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		const n = 24
		sku, buyers, orders := placeEach(t, e, n)
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
		paid := requireSettled(t, e, sku, buyers, orders, commerce.StatusExpired)
		t.Logf("%d paid, %d expired", paid, n-paid)
		e.RequireClean(t)
	})
}

// Orders left PAYING by a PG that did not answer (some approved meanwhile, some declined),
// then three Recover passes and every client's replay of its Pay all at once: each order
// is completed or failed once, charged at most once, its holds posted or given back.
func TestRecoverRacesRecoverAndReplays(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		const n = 12
		sku, buyers, orders := placeEach(t, e, n)
		token := func(i int) string {
			if i%3 == 0 {
				return pgsim.TokenDecline
			}
			return "tok_ok"
		}
		for i := range orders {
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
		assert.Equal(t, int64(n-n/3), requireSettled(t, e, sku, buyers, orders, commerce.StatusPaymentFailed), "all but the declined paid")
		e.RequireClean(t)
		e.RequireDelivered(t)
	})
}

// placeEach places n orders of one unit at 10,000 of one product, each by a buyer of its
// own paying with a 1,000 coupon and all of their 1,000 points.
func placeEach(t *testing.T, e *commercetest.Env, n int) (string, []buyer, []commerce.Order) {
	t.Helper()
	sku := e.Product(t, 10_000, int64(n))
	buyers, orders := make([]buyer, n), make([]commerce.Order, n)
	for i := range orders {
		buyers[i] = newBuyer(t, e, 1_000, 1_000)
		orders[i] = place(t, e, buyers[i], sku, 1, 1_000)
	}
	return sku, buyers, orders
}

// requireSettled checks that each order of placeEach ended PAID, charged once with its
// coupon used and its points spent (the 80 points of reward earned), or in the unpaid
// status with its coupon and points given back, and that the stock sold is the paid
// orders'; it returns how many were paid.
func requireSettled(t *testing.T, e *commercetest.Env, sku string, buyers []buyer, orders []commerce.Order, unpaid commerce.Status) int64 {
	t.Helper()
	var paid int64
	for i, o := range orders {
		got := order(t, e, o.ID)
		assert.Empty(t, got.Step)
		switch got.Status {
		case commerce.StatusPaid:
			paid++
			assert.Equal(t, 1, e.PG.Charges(got.PaymentID))
			assert.Equal(t, ledger.Balance{Available: 80, Total: 80}, balance(t, e, buyers[i].user))
			assert.Equal(t, coupon.StateUsed, couponState(t, e, buyers[i].coupon))
		case unpaid:
			assert.Equal(t, ledger.Balance{Available: 1_000, Total: 1_000}, balance(t, e, buyers[i].user))
			assert.Equal(t, coupon.StateAvailable, couponState(t, e, buyers[i].coupon))
		default:
			t.Errorf("order %s ended %s", o.ID, got.Status)
		}
	}
	requireStock(t, e, sku, int64(len(orders))-paid, 0, paid)
	assert.Equal(t, int(paid), e.PG.Stats().Charges)
	return paid
}
