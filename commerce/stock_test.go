package commerce_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
)

// TestPlaceRetryAfterFailure reproduces the bug of issue 12: the SQL part of PlaceOrder
// fails after the stock was reserved, and the client retries with the same key. The retry
// must place an order that holds its unit — the last one, so nobody else gets it — and
// never an order holding nothing.
func TestPlaceRetryAfterFailure(t *testing.T) {
	hook := &commercetest.Hook{}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 1)
		b := newBuyer(t, e, 0, 0)
		req := commerce.PlaceOrderRequest{UserID: b.user, Lines: []commerce.Line{{ProductID: sku, Qty: 1}}, IdempotencyKey: "k1"}
		hook.FailAt(commerce.StepPlaceCommit)
		_, err := e.Service.PlaceOrder(ctx, req)
		require.Error(t, err)
		n, err := e.DB.NewSelect().Table("commerce_orders").Count(ctx)
		require.NoError(t, err)
		require.Zero(t, n, "no order after the failure")

		o, err := e.Service.PlaceOrder(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusPendingPayment, o.Status)
		requireStock(t, e, sku, 0, 1, 0)
		other := newBuyer(t, e, 0, 0)
		_, err = e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: other.user,
			Lines: []commerce.Line{{ProductID: sku, Qty: 1}}, IdempotencyKey: "k1"})
		require.ErrorIs(t, err, commerce.ErrOutOfStock)

		assert.Equal(t, commerce.StatusPaid, pay(t, e, o, "tok_ok").Status)
		requireStock(t, e, sku, 0, 0, 1)
		assert.Zero(t, e.PG.Stats().CanceledAmount, "nothing charged and refunded")
		e.RequireClean(t)
	}, commerce.WithFaultHook(hook.Func))
}

// TestPlaceRefusedGivesStockBack: a request refused in PlaceOrder's SQL part (too few
// points) gives its units back at once; its retry is refused again (SQL) or told to use a
// new key (Redis: the reservation was released and is never revived); no order is created
// without stock.
func TestPlaceRefusedGivesStockBack(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 1)
		b := newBuyer(t, e, 100, 0)
		req := commerce.PlaceOrderRequest{UserID: b.user, Lines: []commerce.Line{{ProductID: sku, Qty: 1}}, Points: 500,
			IdempotencyKey: "k1"}
		_, err := e.Service.PlaceOrder(ctx, req)
		require.ErrorIs(t, err, commerce.ErrInsufficientPoints)
		requireStock(t, e, sku, 1, 0, 0)

		e.GivePoints(t, b.user, 1_000)
		_, err = e.Service.PlaceOrder(ctx, req)
		if e.Inventory.JoinsTx() {
			require.NoError(t, err, "nothing of the refused attempt remained")
		} else {
			require.ErrorIs(t, err, commerce.ErrIdempotencyConflict)
			requireStock(t, e, sku, 1, 0, 0)
			req.IdempotencyKey = "k2"
			_, err = e.Service.PlaceOrder(ctx, req)
			require.NoError(t, err)
		}
		requireStock(t, e, sku, 0, 1, 0)
		e.RequireClean(t)
	})
}

// TestAuditAfterRetention: the audit does not need Redis to keep resolved reservations.
// Orders paid, cancelled after payment and expired stay clean after every resolved
// reservation record is deleted from Redis and a week has passed; a paid order can still be
// cancelled then, and its units come back once.
func TestAuditAfterRetention(t *testing.T) {
	e := commercetest.MySQL(t, commerce.WithCancelWindow(30*24*time.Hour))
	sku := e.Product(t, 10_000, 10)
	var orders []commerce.Order
	for range 4 {
		orders = append(orders, place(t, e, newBuyer(t, e, 0, 0), sku, 2, 0))
	}
	for _, o := range orders[:3] {
		require.Equal(t, commerce.StatusPaid, pay(t, e, o, "tok_ok").Status)
	}
	_, err := e.Service.Cancel(ctx, orders[2].ID, commerce.Actor{UserID: orders[2].UserID})
	require.NoError(t, err)
	e.Clock.Advance(time.Hour)
	_, err = e.Service.Expire(ctx)
	require.NoError(t, err)
	_, err = e.Inventory.Sweep(ctx)
	require.NoError(t, err)
	requireStock(t, e, sku, 6, 0, 4)
	e.RequireClean(t)

	keys, err := e.Redis.Keys(ctx, "{inventory}:res:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 4)
	require.NoError(t, e.Redis.Del(ctx, keys...).Err())
	e.Clock.Advance(7 * 24 * time.Hour)
	e.RequireClean(t)

	cancelled, err := e.Service.Cancel(ctx, orders[0].ID, commerce.Actor{UserID: orders[0].UserID})
	require.NoError(t, err)
	assert.Equal(t, commerce.StatusCancelled, cancelled.Status)
	e.Settle(t)
	requireStock(t, e, sku, 8, 0, 2)
	e.RequireClean(t)
}

// TestFlashSaleRedisKilled: a sale on MySQL + Redis whose Redis container is killed and
// restarted empty mid-race. Buyers retry what fails with ErrUnavailable (as an HTTP
// client honours 503 + Retry-After); the healer rebuilds Redis from the journal by itself.
// No unit is oversold, every order placed before the loss is paid, exactly `units` orders
// are paid, sold + reserved + available = units, and the audit is clean.
func TestFlashSaleRedisKilled(t *testing.T) {
	saleWithFault(t, func(t *testing.T, r *testenv.Own) {
		r.Stop(t, 0) // SIGKILL
		r.Start(t)
	})
}

// TestFlashSaleRedisFlushed: the same with Redis's data flushed (FLUSHDB) mid-race, the
// server itself staying up (same run ID): only the missing marker tells the loss.
func TestFlashSaleRedisFlushed(t *testing.T) {
	saleWithFault(t, func(t *testing.T, r *testenv.Own) {
		code, out := r.Exec(t, "redis-cli", "FLUSHDB")
		require.Zero(t, code, out)
	})
}

// TestFlashSaleRedisRestarted: the same with the Redis container restarted (docker
// restart: SIGTERM, then a fresh empty server) mid-race.
func TestFlashSaleRedisRestarted(t *testing.T) {
	saleWithFault(t, func(t *testing.T, r *testenv.Own) {
		r.Stop(t, time.Second)
		r.Start(t)
	})
}

// TestFlashSaleRedisPaused: the same with Redis frozen for 5 seconds (docker pause).
func TestFlashSaleRedisPaused(t *testing.T) {
	saleWithFault(t, func(t *testing.T, r *testenv.Own) {
		r.Pause(t)
		time.Sleep(5 * time.Second)
		r.Unpause(t)
	})
}

func saleWithFault(t *testing.T, fault func(*testing.T, *testenv.Own)) {
	own, e, stopHealer := healedSale(t)
	const buyers, units, workers = 600, 150, 24
	sku := e.Product(t, 10_000, units)
	users := make([]string, buyers)
	for i := range users {
		users[i] = e.ID("buyer")
	}

	// retry runs op until it stops failing with ErrUnavailable.
	var unavailable atomic.Int64
	retry := func(op func() error) error {
		for {
			err := op()
			if !errors.Is(err, errcode.ErrUnavailable) {
				return err
			}
			unavailable.Add(1)
			time.Sleep(errcode.RetryAfter(err, 200*time.Millisecond) / 10)
		}
	}
	var (
		paid, soldOut atomic.Int64
		faulted       sync.Once
		mu            sync.Mutex
		placedBefore  []string
		faultDone     = make(chan struct{})
	)
	testkit.Parallel(buyers, workers, func(i int) {
		if i == buyers/10 { // mid-race: most units are still to be sold
			faulted.Do(func() {
				fault(t, own)
				close(faultDone)
			})
		}
		var o commerce.Order
		err := retry(func() (err error) {
			o, err = e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: users[i],
				Lines: []commerce.Line{{ProductID: sku, Qty: 1}}, IdempotencyKey: "sale"})
			return err
		})
		if errors.Is(err, commerce.ErrOutOfStock) {
			soldOut.Add(1)
			return
		}
		if !assert.NoError(t, err) {
			return
		}
		select {
		case <-faultDone:
		default:
			mu.Lock()
			placedBefore = append(placedBefore, o.ID)
			mu.Unlock()
		}
		id := o.ID
		err = retry(func() (err error) {
			o, err = e.Service.Pay(ctx, commerce.PayRequest{OrderID: id, UserID: users[i], Method: payment.MethodCard,
				Token: "tok_ok", IdempotencyKey: "sale"})
			if err == nil && o.Status == commerce.StatusPaying {
				return errcode.Unavailable("pg", errors.New("payment still settling"))
			}
			return err
		})
		if assert.NoError(t, err) && assert.Equal(t, commerce.StatusPaid, o.Status) {
			paid.Add(1)
		}
	})
	stopHealer()
	t.Logf("paid %d, sold out %d, unavailable answers %d, placed before the fault %d",
		paid.Load(), soldOut.Load(), unavailable.Load(), len(placedBefore))
	require.Less(t, len(placedBefore), units, "the fault struck while units were left")

	e.Settle(t)
	assert.Equal(t, int64(units), paid.Load(), "every unit sold once")
	assert.Equal(t, int64(buyers-units), soldOut.Load())
	for _, id := range placedBefore {
		assert.Equal(t, commerce.StatusPaid, order(t, e, id).Status, id)
	}
	st := stock(t, e, sku)
	assert.Equal(t, int64(units), st.Sold+st.Reserved+st.Available, "sold + reserved + available = units")
	requireStock(t, e, sku, 0, 0, units)
	assert.Equal(t, units, e.PG.Stats().Charges)
	assert.Zero(t, e.PG.Stats().CanceledAmount, "no charge refunded")
	e.RequireClean(t)
	journal, redisGen, err := e.Stock.Generation(ctx)
	require.NoError(t, err)
	assert.Equal(t, journal, redisGen, "Redis serves the journal's generation")
	if !strings.Contains(t.Name(), "Paused") {
		assert.Greater(t, journal, int64(1), "Redis was rebuilt")
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

// TestDetachedPlaceEndsWithItsReservation: the part of PlaceOrder a client cannot cancel
// is still bounded when the client set no deadline: by the reservation's TTL. A step that
// hangs past it (a database that hangs, a DSN without readTimeout) must not leave the call
// running forever, nor commit an order whose reservation (Redis) has expired meanwhile:
// the order would hold units the inventory no longer holds for it. (The inventory's
// deadlines follow the Env's fake clock, so here the reservation stays for the retry.)
func TestDetachedPlaceEndsWithItsReservation(t *testing.T) {
	const ttl = 2 * time.Second // the order's expiry plus the payment window
	var hang atomic.Bool
	hook := func(step string) error {
		if step == commerce.StepPlaceCommit && hang.Load() {
			time.Sleep(ttl + 500*time.Millisecond)
		}
		return nil
	}
	each(t, func(t *testing.T, e *commercetest.Env) {
		sku := e.Product(t, 10_000, 10)
		user := newBuyer(t, e, 0, 0).user
		req := commerce.PlaceOrderRequest{UserID: user, Lines: []commerce.Line{{ProductID: sku, Qty: 2}}, IdempotencyKey: "k1"}
		hang.Store(true)
		_, err := e.Service.PlaceOrder(context.Background(), req)
		hang.Store(false)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		page, err := e.Service.ListOrders(ctx, user, commerce.OrderQuery{})
		require.NoError(t, err)
		assert.Empty(t, page.Orders, "no order outlives its reservation")

		// The retry places the order once, on one reservation.
		o, err := e.Service.PlaceOrder(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, commerce.StatusPendingPayment, o.Status)
		requireStock(t, e, sku, 8, 2, 0)
		e.RequireClean(t)
	}, commerce.WithFaultHook(hook), commerce.WithOrderExpiry(time.Second), commerce.WithPaymentWindow(time.Second))
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

// TestFlashSaleWithCancelsRedisFlushedAndRestarted: a sale on MySQL + Redis in which every
// third buyer cancels the order instead of paying (its units released, then sold to a later
// buyer), while Redis is flushed (FLUSHDB) twice and its container restarted once. Buyers
// retry what fails with ErrUnavailable. Once settled, every paid order holds its unit and
// every cancelled one none: sold = paid orders, nothing reserved, available = units − sold,
// and the audit is clean.
func TestFlashSaleWithCancelsRedisFlushedAndRestarted(t *testing.T) {
	own, e, stopHealer := healedSale(t)
	const buyers, units, workers = 450, 120, 24
	sku := e.Product(t, 10_000, units)
	users := make([]string, buyers)
	for i := range users {
		users[i] = e.ID("buyer")
	}
	flush := func() {
		code, out := own.Exec(t, "redis-cli", "FLUSHDB")
		require.Zero(t, code, out)
	}
	faults := map[int]func(){
		buyers / 10: flush,
		buyers / 4:  func() { own.Stop(t, time.Second); own.Start(t) },
		buyers / 2:  flush,
	}
	retry := func(op func() error) error {
		for {
			err := op()
			if !errors.Is(err, errcode.ErrUnavailable) {
				return err
			}
			time.Sleep(errcode.RetryAfter(err, 200*time.Millisecond) / 10)
		}
	}
	var (
		mu               sync.Mutex
		paid, cancelled  []string
		soldOut, faulted atomic.Int64
	)
	testkit.Parallel(buyers, workers, func(i int) {
		if fault, ok := faults[i]; ok {
			fault()
			faulted.Add(1)
		}
		var o commerce.Order
		err := retry(func() (err error) {
			o, err = e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: users[i],
				Lines: []commerce.Line{{ProductID: sku, Qty: 1}}, IdempotencyKey: "sale"})
			return err
		})
		if errors.Is(err, commerce.ErrOutOfStock) {
			soldOut.Add(1)
			return
		}
		if !assert.NoError(t, err) {
			return
		}
		id := o.ID
		if i%3 == 0 {
			err = retry(func() (err error) {
				o, err = e.Service.Cancel(ctx, id, commerce.Actor{UserID: users[i]})
				return err
			})
			if assert.NoError(t, err) && assert.Equal(t, commerce.StatusCancelled, o.Status) {
				mu.Lock()
				cancelled = append(cancelled, id)
				mu.Unlock()
			}
			return
		}
		err = retry(func() (err error) {
			o, err = e.Service.Pay(ctx, commerce.PayRequest{OrderID: id, UserID: users[i], Method: payment.MethodCard,
				Token: "tok_ok", IdempotencyKey: "sale"})
			if err == nil && o.Status == commerce.StatusPaying {
				return errcode.Unavailable("pg", errors.New("payment still settling"))
			}
			return err
		})
		if assert.NoError(t, err) && assert.Equal(t, commerce.StatusPaid, o.Status) {
			mu.Lock()
			paid = append(paid, id)
			mu.Unlock()
		}
	})
	stopHealer()
	require.Equal(t, int64(len(faults)), faulted.Load())
	t.Logf("paid %d, cancelled %d, sold out %d", len(paid), len(cancelled), soldOut.Load())

	e.Settle(t)
	for _, id := range paid {
		assert.Equal(t, commerce.StatusPaid, order(t, e, id).Status, id)
	}
	for _, id := range cancelled {
		got := order(t, e, id)
		assert.Equal(t, commerce.StatusCancelled, got.Status, id)
		assert.Empty(t, got.Step, id)
	}
	assert.Equal(t, buyers, len(paid)+len(cancelled)+int(soldOut.Load()))
	requireStock(t, e, sku, int64(units-len(paid)), 0, int64(len(paid)))
	assert.Equal(t, len(paid), e.PG.Stats().Charges)
	e.RequireClean(t)
	journal, redisGen, err := e.Stock.Generation(ctx)
	require.NoError(t, err)
	assert.Equal(t, journal, redisGen, "Redis serves the journal's generation")
}

// healedSale returns a Redis of the test's own (faults can be injected into its container)
// and a MySQL + Redis environment on it, through a client that fails fast, whose stock
// healer runs until stopHealer, which checks that it ended cleanly.
func healedSale(t *testing.T) (own *testenv.Own, e *commercetest.Env, stopHealer func()) {
	t.Helper()
	own = testenv.OwnRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: own.Addr, PoolSize: 64, DialTimeout: 500 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	e = commercetest.MySQLWithRedis(t, rdb)
	healer, stop := make(chan error, 1), make(chan struct{})
	go func() {
		ctx, cancel := context.WithCancel(ctx)
		go func() { <-stop; cancel() }()
		healer <- e.Stock.Run(ctx, 100*time.Millisecond)
	}()
	return own, e, func() {
		close(stop)
		require.NoError(t, <-healer)
	}
}
