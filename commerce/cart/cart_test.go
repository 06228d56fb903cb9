package cart_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var ctx = context.Background()

// each runs fn on every commerce configuration (SQLite; MySQL with Redis; MySQL alone),
// with a cart Service over it.
func each(t *testing.T, fn func(t *testing.T, e *commercetest.Env, c *cart.Service)) {
	for _, cfg := range commercetest.Configs {
		t.Run(cfg.Name, func(t *testing.T) {
			e := cfg.New(t)
			fn(t, e, newCart(t, e, e.Service))
		})
	}
}

func newCart(t *testing.T, e *commercetest.Env, com cart.Commerce) *cart.Service {
	t.Helper()
	require.NoError(t, cart.CreateSchema(ctx, e.DB))
	c, err := cart.New(e.DB, com, cart.WithClock(e.Clock.Now))
	require.NoError(t, err)
	return c
}

// TestNewRefusesBadOptions: a nil clock is refused, naming the option.
func TestNewRefusesBadOptions(t *testing.T) {
	e := commercetest.SQLite(t)
	testkit.RefusesBadOptions(t, func(opts ...cart.Option) (*cart.Service, error) {
		return cart.New(e.DB, e.Service, opts...)
	}, map[string]cart.Option{"WithClock: nil": cart.WithClock(nil)})
}

// lines returns a cart's lines as product → qty.
func lines(t *testing.T, c *cart.Service, user string) map[string]int64 {
	t.Helper()
	got, err := c.Get(ctx, user)
	require.NoError(t, err)
	out := map[string]int64{}
	for _, it := range got.Items {
		out[it.ProductID] = it.Qty
	}
	return out
}

// add puts qty of product in user's cart.
func add(t *testing.T, c *cart.Service, user, product string, qty int64) {
	t.Helper()
	_, err := c.Add(ctx, user, product, qty)
	require.NoError(t, err)
}

// TestAddOnce: an addition under a key happens once however often, and however
// concurrently, it is sent; the key with another addition is refused and changes nothing.
func TestAddOnce(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, c *cart.Service) {
		p1, p2 := e.Product(t, 1000, 5), e.Product(t, 2500, 5)
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				_, err := c.AddOnce(ctx, "alice", p1, 2, "add-1")
				assert.NoError(t, err)
			})
		}
		wg.Wait()
		got, err := c.AddOnce(ctx, "alice", p1, 2, "add-1")
		require.NoError(t, err)
		require.Len(t, got.Items, 1)
		assert.EqualValues(t, 2, got.Items[0].Qty, "added once")

		_, err = c.AddOnce(ctx, "alice", p1, 2, "add-2")
		require.NoError(t, err)
		_, err = c.AddOnce(ctx, "bob", p1, 1, "add-1") // keys are the user's own
		require.NoError(t, err)
		for _, reused := range []struct {
			product string
			qty     int64
		}{{p1, 3}, {p2, 2}} {
			_, err = c.AddOnce(ctx, "alice", reused.product, reused.qty, "add-1")
			require.ErrorIs(t, err, cart.ErrKeyReused)
			require.ErrorIs(t, err, errcode.ErrKeyReused)
		}
		for _, key := range []string{"", strings.Repeat("k", cart.MaxKeyLen+1)} {
			_, err = c.AddOnce(ctx, "alice", p1, 1, key)
			require.ErrorIs(t, err, cart.ErrInvalidRequest)
		}
		assert.Equal(t, map[string]int64{p1: 4}, lines(t, c, "alice"))
		assert.Equal(t, map[string]int64{p1: 1}, lines(t, c, "bob"))
	})
}

// TestAddOnceSurvivesACrash: the cart's MariaDB is SIGKILLed while 20 users add to their
// carts, one unit under each of 40 keys, and started again; each user sends each addition
// again with its key until it is answered. Every cart then holds exactly 40 units: an
// addition whose COMMIT went unanswered is not made a second time.
func TestAddOnceSurvivesACrash(t *testing.T) {
	e := commercetest.SQLite(t) // the catalog
	p := e.Product(t, 1000, 5)
	server, dsn := testenv.OwnMySQL(t)
	sqldb, err := sql.Open("mysql", dsn+"&timeout=2s&readTimeout=3s&writeTimeout=3s")
	require.NoError(t, err)
	db := bun.NewDB(sqldb, mysqldialect.New())
	t.Cleanup(func() { db.Close() })
	require.NoError(t, cart.CreateSchema(ctx, db))
	c := testkit.Must(cart.New(db, e.Service))(t)

	const users, adds = 20, 40
	var answered, failed atomic.Int64
	deadline := time.Now().Add(2 * time.Minute)
	var wg sync.WaitGroup
	for u := range users {
		wg.Go(func() {
			user := fmt.Sprintf("u%d", u)
			for i := range adds {
				for {
					_, err := c.AddOnce(ctx, user, p, 1, fmt.Sprintf("k%d", i))
					if err == nil {
						answered.Add(1)
						break
					}
					if errors.Is(err, cart.ErrKeyReused) || errors.Is(err, cart.ErrInvalidRequest) || time.Now().After(deadline) {
						t.Errorf("%s k%d: %v", user, i, err)
						return
					}
					failed.Add(1)
					time.Sleep(50 * time.Millisecond) // the server is down: the same key again
				}
			}
		})
	}
	require.Eventually(t, func() bool { return answered.Load() >= users*adds/5 }, time.Minute, time.Millisecond)
	server.Stop(t, 0)
	time.Sleep(time.Second)
	server.Start(t)
	wg.Wait()

	assert.Positive(t, failed.Load(), "the crash interrupted additions")
	for u := range users {
		assert.Equal(t, map[string]int64{p: adds}, lines(t, c, fmt.Sprintf("u%d", u)), "u%d: one unit per key", u)
	}
}

func TestEditAndList(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, c *cart.Service) {
		p1, p2 := e.Product(t, 1000, 5), e.Product(t, 2500, 0)
		add(t, c, "alice", p1, 2)
		add(t, c, "alice", p2, 1)
		got, err := c.Add(ctx, "alice", p1, 1)
		require.NoError(t, err)
		require.Len(t, got.Items, 2)
		assert.Equal(t, cart.Item{ProductID: p1, Qty: 3, Name: "Product " + p1, UnitPrice: 1000, Amount: 3000,
			Available: 5, InStock: true, AddedAt: commercetest.Start}, got.Items[0])
		assert.Equal(t, int64(0), got.Items[1].Available)
		assert.False(t, got.Items[1].InStock, "no stock of p2")
		assert.Equal(t, int64(3000+2500), got.Subtotal)

		// Prices are current; nothing is reserved.
		_, err = e.Service.UpdatePrice(ctx, p1, 1200)
		require.NoError(t, err)
		got, err = c.SetQty(ctx, "alice", p1, 5)
		require.NoError(t, err)
		assert.Equal(t, int64(5*1200+2500), got.Subtotal)
		assert.True(t, got.Items[0].InStock, "5 of 5 available")
		st, err := e.Inventory.Stock(ctx, p1)
		require.NoError(t, err)
		assert.Equal(t, [2]int64{5, 0}, [2]int64{st.Available, st.Reserved}, "a cart reserves nothing")

		got, err = c.Remove(ctx, "alice", p2)
		require.NoError(t, err)
		require.Len(t, got.Items, 1)
		_, err = c.Remove(ctx, "alice", p2) // idempotent
		require.NoError(t, err)
		assert.Equal(t, map[string]int64{p1: 5}, lines(t, c, "alice"))
		assert.Empty(t, lines(t, c, "bob"), "carts are per user")
	})
}

func TestLimitsAndBadInput(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, c *cart.Service) {
		p := e.Product(t, 1000, 10)
		add(t, c, "alice", p, 990)
		before := map[string]int64{p: 990}

		for _, tc := range []struct {
			name string
			do   func() error
			want error
		}{
			{"qty 0", func() error { _, err := c.Add(ctx, "alice", p, 0); return err }, cart.ErrInvalidRequest},
			{"negative qty", func() error { _, err := c.SetQty(ctx, "alice", p, -1); return err }, cart.ErrInvalidRequest},
			{"qty over 999", func() error { _, err := c.SetQty(ctx, "alice", p, 1000); return err }, cart.ErrInvalidRequest},
			{"sum over 999", func() error { _, err := c.Add(ctx, "alice", p, 10); return err }, cart.ErrQuantityTooLarge},
			{"empty user", func() error { _, err := c.Add(ctx, "", p, 1); return err }, cart.ErrInvalidRequest},
			{"user with a space", func() error { _, err := c.Add(ctx, "al ice", p, 1); return err }, cart.ErrInvalidRequest},
			{"bad product ID", func() error { _, err := c.Add(ctx, "alice", "a,b", 1); return err }, cart.ErrInvalidRequest},
			{"unknown product", func() error { _, err := c.Add(ctx, "alice", "nope", 1); return err }, commerce.ErrProductNotFound},
			{"empty checkout key", func() error {
				_, err := c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice"})
				return err
			}, cart.ErrInvalidRequest},
		} {
			err := tc.do()
			assert.ErrorIs(t, err, tc.want, tc.name)
			assert.Equal(t, before, lines(t, c, "alice"), "%s changed the cart", tc.name)
		}
		var lim *cart.LimitError
		_, err := c.Add(ctx, "alice", p, 10)
		require.ErrorAs(t, err, &lim)
		assert.Equal(t, int64(1000), lim.Qty)

		// 50 lines fit; the 51st does not, and changes nothing.
		products := make([]string, cart.MaxLines)
		products[0] = p
		for i := 1; i < cart.MaxLines; i++ {
			products[i] = e.Product(t, 100, 1)
			add(t, c, "alice", products[i], 1)
		}
		extra := e.Product(t, 100, 1)
		_, err = c.Add(ctx, "alice", extra, 1)
		require.ErrorIs(t, err, cart.ErrTooManyLines)
		require.ErrorAs(t, err, &lim)
		assert.Equal(t, cart.MaxLines+1, lim.Lines)
		_, err = c.SetQty(ctx, "alice", extra, 1)
		require.ErrorIs(t, err, cart.ErrTooManyLines)
		got := lines(t, c, "alice")
		assert.Len(t, got, cart.MaxLines)
		assert.NotContains(t, got, extra)
		_, err = c.SetQty(ctx, "alice", products[1], 3) // changing a line is still fine
		require.NoError(t, err)

		_, err = c.Checkout(ctx, cart.CheckoutRequest{UserID: "bob", IdempotencyKey: "k"})
		assert.ErrorIs(t, err, cart.ErrEmpty)
	})
}

// TestConcurrentAdds races adds of distinct products into one cart: the line limit holds
// exactly.
func TestConcurrentAdds(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, c *cart.Service) {
		const n = cart.MaxLines + 10
		products := make([]string, n)
		for i := range products {
			products[i] = e.Product(t, 100, 1)
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { _, errs[i] = c.Add(ctx, "alice", products[i], 1) })
		}
		wg.Wait()
		ok, full := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case assert.ErrorIs(t, err, cart.ErrTooManyLines):
				full++
			}
		}
		assert.Equal(t, [2]int{cart.MaxLines, n - cart.MaxLines}, [2]int{ok, full})
		assert.Len(t, lines(t, c, "alice"), cart.MaxLines)
	})
}

// TestCheckoutEqualsOrder orders a cart and the same lines directly: the two orders agree
// in everything but their IDs; the cart is empty afterwards; the audit is clean.
func TestCheckoutEqualsOrder(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, c *cart.Service) {
		p1, p2 := e.Product(t, 1500, 10), e.Product(t, 700, 10)
		tpl := e.CouponTemplate(t, 500)
		for _, u := range []string{"alice", "bob"} {
			e.GivePoints(t, u, 1000)
		}
		add(t, c, "alice", p2, 3)
		add(t, c, "alice", p1, 2)

		fromCart, err := c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1",
			CouponID: e.GiveCoupon(t, tpl, "alice"), Points: 300})
		require.NoError(t, err)
		direct, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: "bob", IdempotencyKey: "co-1",
			Lines: []commerce.Line{{ProductID: p2, Qty: 3}, {ProductID: p1, Qty: 2}}, CouponID: e.GiveCoupon(t, tpl, "bob"), Points: 300})
		require.NoError(t, err)

		assert.Equal(t, direct.Lines, fromCart.Lines)
		assert.Equal(t, [5]int64{direct.Subtotal, direct.Discount, direct.Points, direct.AmountDue, 2*1500 + 3*700},
			[5]int64{fromCart.Subtotal, fromCart.Discount, fromCart.Points, fromCart.AmountDue, fromCart.Subtotal})
		assert.Equal(t, direct.Status, fromCart.Status)
		assert.Empty(t, lines(t, c, "alice"), "the cart is emptied with the order")
		for _, p := range []string{p1, p2} {
			st, err := e.Inventory.Stock(ctx, p)
			require.NoError(t, err)
			assert.Equal(t, st.Reserved, 2*map[string]int64{p1: 2, p2: 3}[p], "both orders reserved their units of %s", p)
		}

		// A retry with the key returns the same order although the cart is empty now; the
		// same key with other points is a conflict; the key does not clash with direct orders.
		again, err := c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1",
			CouponID: fromCart.CouponID, Points: 300})
		require.NoError(t, err)
		assert.Equal(t, fromCart.ID, again.ID)
		_, err = c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1", Points: 200})
		assert.ErrorIs(t, err, commerce.ErrIdempotencyConflict)
		page, err := e.Service.ListOrders(ctx, "alice", commerce.OrderQuery{})
		require.NoError(t, err)
		assert.Len(t, page.Orders, 1)
		e.RequireClean(t)
	})
}

// TestCheckoutFailureKeepsCart: an order that fails (out of stock) leaves the cart as it
// was and nothing reserved.
func TestCheckoutFailureKeepsCart(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, c *cart.Service) {
		p1, p2 := e.Product(t, 1000, 10), e.Product(t, 1000, 1)
		add(t, c, "alice", p1, 2)
		add(t, c, "alice", p2, 2)
		_, err := c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1"})
		require.ErrorIs(t, err, commerce.ErrOutOfStock)
		assert.Equal(t, map[string]int64{p1: 2, p2: 2}, lines(t, c, "alice"))
		st, err := e.Inventory.Stock(ctx, p1)
		require.NoError(t, err)
		assert.Equal(t, int64(0), st.Reserved)
		e.RequireClean(t)
	})
}

// unpaidOnce is a Commerce whose first placement asked to pay with points places the order
// and then fails before paying it, as a crash or a failed payment would.
type unpaidOnce struct {
	cart.Commerce
	failed *atomic.Bool
}

func (c unpaidOnce) PlaceOrder(ctx context.Context, req commerce.PlaceOrderRequest) (commerce.Order, error) {
	if !req.PayWithPoints || !c.failed.CompareAndSwap(false, true) {
		return c.Commerce.PlaceOrder(ctx, req)
	}
	req.PayWithPoints = false
	if _, err := c.Commerce.PlaceOrder(ctx, req); err != nil {
		return commerce.Order{}, err
	}
	return commerce.Order{}, errors.New("injected: the payment fails after the placement")
}

// TestCheckoutPayWithPoints: a cart paid with points alone is ordered and paid in one
// checkout, and an order whose payment failed after its placement is paid by the checkout
// that finds it (the cart is empty by then), once.
func TestCheckoutPayWithPoints(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, plain *cart.Service) {
		c := newCart(t, e, unpaidOnce{Commerce: e.Service, failed: new(atomic.Bool)})
		p := e.Product(t, 1000, 10)
		e.GivePoints(t, "alice", 5000)
		for _, key := range []string{"co-1", "co-2"} {
			add(t, c, "alice", p, 2)
			req := cart.CheckoutRequest{UserID: "alice", IdempotencyKey: key, Points: 2000, PayWithPoints: true}
			o, err := c.Checkout(ctx, req)
			require.NoError(t, err, key)
			assert.Equal(t, commerce.StatusPaid, o.Status, key)
			again, err := c.Checkout(ctx, req)
			require.NoError(t, err)
			assert.Equal(t, o, again)
		}
		bal, err := e.Service.Points(ctx, "alice")
		require.NoError(t, err)
		assert.Equal(t, int64(1000), bal.Total)
		st, err := e.Inventory.Stock(ctx, p)
		require.NoError(t, err)
		assert.Equal(t, [3]int64{6, 0, 4}, [3]int64{st.Available, st.Reserved, st.Sold})
		assert.Empty(t, lines(t, plain, "alice"))
		e.RequireClean(t)
	})
}

// changing is a Commerce that changes the cart just before the order is placed, as a
// concurrent request would between the checkout's read and the order's transaction.
type changing struct {
	cart.Commerce
	change func()
}

func (c changing) PlaceOrder(ctx context.Context, req commerce.PlaceOrderRequest) (commerce.Order, error) {
	c.change()
	return c.Commerce.PlaceOrder(ctx, req)
}

func TestCheckoutOfChangedCart(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, plain *cart.Service) {
		p1, p2 := e.Product(t, 1000, 10), e.Product(t, 1000, 10)
		_, err := plain.Add(ctx, "alice", p1, 1)
		require.NoError(t, err)
		c := newCart(t, e, changing{Commerce: e.Service, change: func() {
			_, err := plain.Add(ctx, "alice", p2, 1)
			require.NoError(t, err)
		}})
		_, err = c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1"})
		require.ErrorIs(t, err, cart.ErrChanged)
		assert.Equal(t, map[string]int64{p1: 1, p2: 1}, lines(t, plain, "alice"), "the cart is kept")
		page, err := e.Service.ListOrders(ctx, "alice", commerce.OrderQuery{})
		require.NoError(t, err)
		assert.Empty(t, page.Orders, "nothing was placed")
		st, err := e.Inventory.Stock(ctx, p1)
		require.NoError(t, err)
		assert.Equal(t, int64(0), st.Reserved)

		o, err := plain.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1"})
		require.NoError(t, err, "the retry orders the cart as it is now")
		assert.Len(t, o.Lines, 2)
		e.RequireClean(t)
	})
}

// TestConcurrentCheckoutOneKey: many checkouts of one cart with one key place exactly one
// order, all return it, and the cart is emptied once.
func TestConcurrentCheckoutOneKey(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env, c *cart.Service) {
		p := e.Product(t, 1000, 100)
		add(t, c, "alice", p, 3)
		const n = 16
		ids := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				o, err := c.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "same"})
				ids[i], errs[i] = o.ID, err
			})
		}
		wg.Wait()
		for i := range n {
			require.NoError(t, errs[i], "checkout %d", i)
			assert.Equal(t, ids[0], ids[i])
		}
		page, err := e.Service.ListOrders(ctx, "alice", commerce.OrderQuery{})
		require.NoError(t, err)
		require.Len(t, page.Orders, 1)
		assert.Equal(t, []commerce.OrderLine{{ProductID: p, Qty: 3, UnitPrice: 1000, Amount: 3000}}, page.Orders[0].Lines)
		st, err := e.Inventory.Stock(ctx, p)
		require.NoError(t, err)
		assert.Equal(t, [2]int64{97, 3}, [2]int64{st.Available, st.Reserved}, "reserved once")
		assert.Empty(t, lines(t, c, "alice"))
		e.RequireClean(t)
	})
}
