package cart_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
)

// mysqlConfigs are the commerce configurations on a MySQL server (with Redis, and without),
// where a test can kill the database's connections (testenv.KillConnections).
var mysqlConfigs = []struct {
	Name string
	New  commercetest.Config
}{{"MySQL+Redis+Kafka", commercetest.MySQL}, {"MySQL+Kafka", commercetest.MySQLSQLInventory}}

// killAfterInTx is a cart's commerce under which the first InTx of a placement to run to
// its end (the checkout recorded, the cart emptied, in the placing transaction) kills every
// other connection to the database (testenv.KillConnections from kill's own connection:
// the server rolls the placing transaction back, and those of every request racing it, as
// a crash would) and then runs then (if not nil), before the placement's next statement
// meets its dropped connection.
type killAfterInTx struct {
	cart.Commerce
	kill    func()
	then    func()
	placing func() // if not nil, called once, as the first placement begins
	once    sync.Once
	first   sync.Once
}

func (k *killAfterInTx) PlaceOrder(ctx context.Context, req commerce.PlaceOrderRequest) (commerce.Order, error) {
	if k.placing != nil {
		k.first.Do(k.placing)
	}
	if step := req.InTx; step != nil {
		req.InTx = func(ctx context.Context, tx bun.IDB) error {
			if err := step(ctx, tx); err != nil {
				return err
			}
			k.once.Do(func() {
				k.kill()
				if k.then != nil {
					k.then()
				}
			})
			return nil
		}
	}
	return k.Commerce.PlaceOrder(ctx, req)
}

// untilAnswered sends call again while it fails as a dependency failure (the database's
// connections were killed: the client's retry), at most 20 times, and returns its answer.
func untilAnswered[T any](t *testing.T, call func() (T, error)) (T, error) {
	t.Helper()
	for range 20 {
		v, err := call()
		if !depfail.Is(err) {
			return v, err
		}
	}
	t.Fatal("still a dependency failure after 20 tries")
	panic("unreachable")
}

// TestCheckoutKilledAfterItsRecordThenKeyTakenByADirectOrder: as
// TestCheckoutKeyTakenAfterAFailedAttempt, with a real fault: the checkout's placing
// transaction records the checkout and empties the cart, then every connection to the
// database is killed (the server rolls that transaction back), and the user places a
// direct order under the order key the checkout derived before the placement finds its
// connection dropped. The checkout, and its retry with the key, must not take that order
// for the cart's: each is refused as a key conflict (or fails as the database being
// unavailable), the cart keeps its lines, the direct order is not paid with the user's
// points, and the stock the failed attempt reserved (in Redis too) is given back.
func TestCheckoutKilledAfterItsRecordThenKeyTakenByADirectOrder(t *testing.T) {
	for _, cfg := range mysqlConfigs {
		for _, points := range []int64{0, 2000} {
			t.Run(fmt.Sprintf("%s/points=%d", cfg.Name, points), func(t *testing.T) {
				e := cfg.New(t)
				p1 := e.Product(t, 1000, 10)
				e.GivePoints(t, "alice", 5000)
				var direct commerce.Order
				c := newCart(t, e, &killAfterInTx{Commerce: e.Service, kill: func() { testenv.KillConnections(t, e.DB) },
					then: func() {
						direct, _ = untilAnswered(t, func() (commerce.Order, error) {
							return e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: "alice",
								IdempotencyKey: derivedOrderKey("co-1", points, 1, p1, 2),
								Lines:          []commerce.Line{{ProductID: p1, Qty: 2}}, Points: points})
						})
						require.NotEmpty(t, direct.ID, "the direct order is placed")
					}})
				add(t, c, "alice", p1, 2) // the cart's version is 1
				req := cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "co-1", Points: points, PayWithPoints: points > 0}
				_, err := c.Checkout(ctx, req)
				require.NotEmpty(t, direct.ID, "the connections were killed after the checkout's InTx")
				if !depfail.Is(err) {
					require.ErrorIs(t, err, commerce.ErrIdempotencyConflict, "the direct order is not the checkout's")
				}
				// checkoutKeyTaken retries the checkout and checks the end state.
				checkoutKeyTaken(t, e, c, p1, &direct, points)
				st := testkit.Must(e.Inventory.Stock(ctx, p1))(t)
				assert.Equal(t, [3]int64{8, 2, 0}, [3]int64{st.Available, st.Reserved, st.Sold}, "the direct order's units alone are reserved")
			})
		}
	}
}

// TestCheckoutStormWithConnectionsKilled: four checkouts of one cart with one key, paying
// with points alone, race two direct orders the user places under the order key those
// checkouts derive (same content; paying with points alone in odd rounds; sent with the
// checkouts, as the first checkout places its order, or once the connections are
// killed, by turns), and the first
// placing transaction to record its checkout kills every connection to the database,
// failing the transactions of every request racing it. After the fault, every request is
// retried with its key until it is answered, and the payment reconciler and Recover run.
// The end state is exact: the order key names one order, the user has no other; it is the
// cart's (the checkout answers it PAID, the cart is empty, no checkout was refused) or the
// direct one (every checkout refused as a key conflict, the cart keeps its line, the order
// paid only if the direct requests asked for it, its points held otherwise); every answer
// that is an order is that order; the points are exactly what that order implies, the
// unit reserved or sold once, and a checkout retried again answers as its first answer.
func TestCheckoutStormWithConnectionsKilled(t *testing.T) {
	for _, cfg := range mysqlConfigs {
		t.Run(cfg.Name, func(t *testing.T) {
			e := cfg.New(t)
			for round := range 12 {
				when := []string{"together", "at-placement", "after-kill"}[round%3]
				t.Run(fmt.Sprintf("%d-%s", round, when), func(t *testing.T) {
					stormRound(t, e, round%2 == 1, when)
				})
			}
			e.RequireClean(t)
		})
	}
}

// stormRound is a round of TestCheckoutStormWithConnectionsKilled, its direct orders sent
// when says: "together" with the checkouts, "at-placement" as the first checkout places its
// order, "after-kill" once the connections are killed.
func stormRound(t *testing.T, e *commercetest.Env, directPays bool, when string) {
	user, p := e.ID("user"), e.Product(t, 1000, 10)
	e.GivePoints(t, user, 10_000)
	directsGo, checkoutsDone := make(chan struct{}), make(chan struct{})
	var goOnce sync.Once
	release := func() { goOnce.Do(func() { close(directsGo) }) }
	k := &killAfterInTx{Commerce: e.Service, kill: func() { testenv.KillConnections(t, e.DB) }}
	switch when {
	case "together":
		release()
	case "at-placement":
		k.placing = release
	case "after-kill":
		k.then = release
	}
	c := newCart(t, e, k)
	add(t, c, user, p, 1) // the cart's version is 1
	key := derivedOrderKey("co", 1000, 1, p, 1)
	checkoutReq := cart.CheckoutRequest{UserID: user, IdempotencyKey: "co", Points: 1000, PayWithPoints: true}
	directReq := commerce.PlaceOrderRequest{UserID: user, IdempotencyKey: key, Lines: []commerce.Line{{ProductID: p, Qty: 1}},
		Points: 1000, PayWithPoints: directPays}

	const checkouts, directs = 4, 2
	type answer struct {
		o   commerce.Order
		err error
	}
	answers := make([]answer, checkouts+directs)
	var wg, checkoutsWG sync.WaitGroup
	start := make(chan struct{})
	for i := range answers {
		if i < checkouts {
			checkoutsWG.Add(1)
		}
		wg.Go(func() {
			<-start
			if i < checkouts {
				defer checkoutsWG.Done()
				answers[i].o, answers[i].err = c.Checkout(ctx, checkoutReq)
			} else {
				select { // not waiting for a kill that never comes
				case <-directsGo:
				case <-checkoutsDone:
				}
				answers[i].o, answers[i].err = e.Service.PlaceOrder(ctx, directReq)
			}
		})
	}
	close(start)
	checkoutsWG.Wait()
	close(checkoutsDone)
	wg.Wait()
	for i := range answers { // the clients' retries, with their keys
		if depfail.Is(answers[i].err) {
			if i < checkouts {
				answers[i].o, answers[i].err = untilAnswered(t, func() (commerce.Order, error) { return c.Checkout(ctx, checkoutReq) })
			} else {
				answers[i].o, answers[i].err = untilAnswered(t, func() (commerce.Order, error) { return e.Service.PlaceOrder(ctx, directReq) })
			}
		}
	}
	e.Settle(t)

	o, err := e.Service.OrderByKey(ctx, user, key)
	require.NoError(t, err, "an order is placed under the key")
	page, err := e.Service.ListOrders(ctx, user, commerce.OrderQuery{})
	require.NoError(t, err)
	require.Len(t, page.Orders, 1, "one order of the user")
	again, err := untilAnswered(t, func() (commerce.Order, error) { return c.Checkout(ctx, checkoutReq) })
	cartsOwn := err == nil
	for i, a := range answers {
		switch {
		case a.err == nil:
			assert.Equal(t, o.ID, a.o.ID, "answer %d is the key's order", i)
		case i < checkouts && !cartsOwn:
			assert.ErrorIs(t, a.err, commerce.ErrIdempotencyConflict, "checkout %d", i)
		default:
			t.Errorf("request %d (of %d checkouts) answered %v; the key's order is the cart's: %t", i, checkouts, a.err, cartsOwn)
		}
	}
	paid := cartsOwn || directPays
	if cartsOwn {
		assert.Equal(t, o.ID, again.ID)
		assert.Empty(t, lines(t, c, user), "the cart is emptied with its order")
	} else {
		require.ErrorIs(t, err, commerce.ErrIdempotencyConflict, "a checkout retried after the storm")
		assert.Equal(t, map[string]int64{p: 1}, lines(t, c, user), "the cart keeps its line")
	}
	o = testkit.Must(e.Service.GetOrder(ctx, o.ID, commerce.Actor{Admin: true}))(t)
	st := testkit.Must(e.Inventory.Stock(ctx, p))(t)
	b := testkit.Must(e.Service.Points(ctx, user))(t)
	if paid {
		assert.Equal(t, commerce.StatusPaid, o.Status)
		assert.Equal(t, ledger.Balance{Available: 9000, Total: 9000}, b, "the order's points spent once")
		assert.Equal(t, [3]int64{9, 0, 1}, [3]int64{st.Available, st.Reserved, st.Sold}, "one unit sold")
	} else {
		assert.Equal(t, commerce.StatusPendingPayment, o.Status, "the direct order, not asked to be paid, is not paid")
		assert.Equal(t, ledger.Balance{Available: 9000, Held: 1000, Total: 10_000}, b, "the order's points held once")
		assert.Equal(t, [3]int64{9, 1, 0}, [3]int64{st.Available, st.Reserved, st.Sold}, "one unit reserved")
	}
	last, lerr := untilAnswered(t, func() (commerce.Order, error) { return c.Checkout(ctx, checkoutReq) })
	if cartsOwn {
		require.NoError(t, lerr)
		assert.Equal(t, o, last, "the checkout retried answers its order as it is")
	} else {
		assert.True(t, errors.Is(lerr, commerce.ErrIdempotencyConflict), "%v", lerr)
	}
	errs := make([]string, len(answers))
	for i, a := range answers {
		errs[i] = fmt.Sprint(a.err)
	}
	t.Logf("the key's order is the cart's: %t, answers: %q", cartsOwn, errs)
}
