package server_test

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/refserver/server"
)

// TestTwoInstancesStockAdminUnderLoad: two full-mode instances; an admin sets the stock
// (on-hand count and buyer limit), each setting sent to one instance and sent again to the
// other, while buyers on both place orders on both at once, pay some, cancel some paid
// and unpaid, and let the rest expire. The end state is exact: the on-hand count plus the
// units sold is what the last setting made it (buyers only move units between available,
// reserved and sold), sold = the units of PAID orders, nothing reserved, no buyer holding
// more than any limit the admin set, one charge per payment and one refund per paid
// order cancelled, every order placed listed as its buyer was answered, the audit clean on
// both instances.
func TestTwoInstancesStockAdminUnderLoad(t *testing.T) {
	stockAdminUnderLoad(t, "no fault", nil)
}

// TestTwoInstancesStockAdminRedisRestartsEmpty: the same with the shared Redis emptied and
// restarted mid-way, so that its stock, holds and per-buyer counts are rebuilt from SQL.
func TestTwoInstancesStockAdminRedisRestartsEmpty(t *testing.T) {
	stockAdminUnderLoad(t, "Redis restarted empty", func(rdb *testenv.Own, _ func(bool)) {
		rc := redis.NewClient(&redis.Options{Addr: rdb.Addr})
		defer rc.Close()
		require.NoError(t, rc.FlushAll(t.Context()).Err())
		rdb.Stop(t, 0)
		time.Sleep(2 * time.Second)
		rdb.Start(t)
	})
}

// TestTwoInstancesStockAdminOneRedisLinkPaused: the same with instance 0's connections to
// Redis frozen for 5 s (its commands held, unanswered) while instance 1 keeps selling.
func TestTwoInstancesStockAdminOneRedisLinkPaused(t *testing.T) {
	stockAdminUnderLoad(t, "instance 0's Redis paused", func(_ *testenv.Own, pause func(bool)) {
		pause(true)
		time.Sleep(5 * time.Second)
		pause(false)
	})
}

// TestTwoInstancesStockAdminRedisPaused: the same with the shared Redis container paused
// (docker pause) for 4 s, both instances meeting it.
func TestTwoInstancesStockAdminRedisPaused(t *testing.T) {
	stockAdminUnderLoad(t, "Redis paused", func(rdb *testenv.Own, _ func(bool)) {
		rdb.Pause(t)
		time.Sleep(4 * time.Second)
		rdb.Unpause(t)
	})
}

// stockAdminUnderLoad runs the scenario, calling fault (nil: none) once the load is under
// way with the shared Redis and a switch that freezes instance 0's link to it.
func stockAdminUnderLoad(t *testing.T, what string, fault func(rdb *testenv.Own, pause func(bool))) {
	const (
		buyers = 16
		rounds = 6
		price  = 1000
	)
	var frozen sync.RWMutex // write-locked: instance 0's Redis commands are held
	ti := newTwoInstances(t, func(i int, cfg *server.Config) {
		cfg.OrderExpiry = 3 * time.Second
		if i == 0 {
			target := cfg.RedisAddr
			ln := testenv.ProxyListener(t, func(c net.Conn) {
				testenv.Proxy(c, target, testenv.RedisCommand, func(string) testenv.Cut {
					frozen.RLock()
					defer frozen.RUnlock()
					return testenv.Cut{}
				})
			})
			cfg.RedisAddr = ln.Addr().String()
		}
	})
	pause := func(on bool) {
		if on {
			frozen.Lock()
		} else {
			frozen.Unlock()
		}
	}
	admin := setup(t, ti.apps[0], "hot", price, 20)
	const maxLimit = 3
	settings := []server.SetStockJSON{{OnHand: 12, BuyerLimit: 2}, {OnHand: 25, BuyerLimit: maxLimit}, {OnHand: 6, BuyerLimit: 2},
		{OnHand: 18, BuyerLimit: maxLimit}, {OnHand: 0, BuyerLimit: 1}, {OnHand: 15, BuyerLimit: 2}}
	c := &flowClient{}

	type order struct {
		id                   string
		paid, cancelled, exp bool // as answered
	}
	placed := make([][]order, buyers)
	var mu sync.Mutex
	var failures []string
	fail := func(f string, a ...any) { mu.Lock(); failures = append(failures, fmt.Sprintf(f, a...)); mu.Unlock() }
	okProblem := func(r resp, codes ...string) bool {
		p, ok := decodeProblem(r.Body)
		return ok && (r.Status == http.StatusUnprocessableEntity || r.Status == http.StatusConflict) && slices.Contains(codes, p.Code)
	}

	stop := make(chan struct{})
	var last server.StockJSON // the answer to the last setting applied
	adminDone := make(chan struct{})
	go func() { // the admin: each setting on one instance, then again on the other (the route takes no key)
		defer close(adminDone)
		for k := 0; ; k++ {
			for n := range 2 {
				r := c.on(ti.apps[(k+n)%2], "set stock", "PUT", "/v1/products/hot/stock", admin, "", settings[k%len(settings)])
				switch {
				case r.Status == http.StatusOK:
					if err := jsonUnmarshal(r.Body, &last); err != nil {
						fail("set stock %d: %v", k, err)
					}
				case !okProblem(r, "out_of_stock"): // below the units reserved
					fail("set stock %d: %d %s", k, r.Status, r.Body)
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	done := make(chan struct{})
	go func() {
		defer close(done)
		testkit.Parallel(buyers, buyers, func(i int) {
			tok := token(t, fmt.Sprintf("buyer-%02d", i), false)
			for r := range rounds {
				var wg sync.WaitGroup
				got := make([]order, 2)
				for n := range 2 { // on both instances at once
					wg.Go(func() {
						x, y := ti.apps[(i+n)%2], ti.apps[(i+n+1)%2]
						ans := c.on(x, "place", "POST", "/v1/orders", tok, fmt.Sprintf("o-%d-%d", r, n),
							server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "hot", Qty: 1}}})
						var o server.OrderJSON
						if ans.Status != http.StatusCreated || jsonUnmarshal(ans.Body, &o) != nil {
							if !okProblem(ans, "out_of_stock", "buyer_limit_exceeded") {
								fail("buyer %d place: %d %s", i, ans.Status, ans.Body)
							}
							return
						}
						g := order{id: o.ID}
						act := (i + r + n) % 4 // 0, 1: pay (1: then cancel); 2: cancel; 3: let expire
						if act < 2 {
							ans = c.on(y, "pay", "POST", "/v1/orders/"+o.ID+"/pay", tok, "pay-"+o.ID, server.PayJSON{Method: "CARD", Token: "tok_ok"})
							switch {
							case ans.Status == http.StatusOK:
								g.paid = true
							case okProblem(ans, "order_expired", "invalid_order_state"):
								g.exp = true
							default:
								fail("buyer %d pay: %d %s", i, ans.Status, ans.Body)
							}
						}
						if act == 1 && g.paid || act == 2 {
							ans = c.on(x, "cancel", "POST", "/v1/orders/"+o.ID+"/cancel", tok, "", nil)
							switch {
							case ans.Status == http.StatusOK || ans.Status == http.StatusAccepted:
								g.cancelled = true
							case okProblem(ans, "order_expired", "invalid_order_state"):
								g.exp = true
							default:
								fail("buyer %d cancel: %d %s", i, ans.Status, ans.Body)
							}
						}
						got[n] = g
					})
				}
				wg.Wait()
				for _, g := range got {
					if g.id != "" {
						placed[i] = append(placed[i], g)
					}
				}
			}
		})
	}()
	if fault != nil {
		time.Sleep(time.Second)
		fault(ti.rdb, pause)
	}
	<-done
	close(stop)
	<-adminDone
	statuses := checkHonestAttempts(t, c.log)
	t.Logf("%s: answers %v", what, statuses)
	require.Empty(t, failures)

	// Every order settles (expired, cancelled, paid) and nothing stays reserved.
	final := map[string]server.OrderJSON{}
	var st [2]server.StockJSON
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		settled := true
		for i := range buyers {
			tok := token(t, fmt.Sprintf("buyer-%02d", i), false)
			page := as[server.OrderPageJSON](t, expect(t, e2eUntilFinal(t, ti.apps[i%2], "GET", "/v1/orders?limit=100", tok, "", nil), http.StatusOK))
			require.Empty(t, page.NextCursor)
			require.Len(t, page.Orders, len(placed[i]), "buyer %d: the orders placed, no other", i)
			for _, o := range page.Orders {
				final[o.ID] = o
				settled = settled && (o.Status == "PAID" || o.Status == "CANCELLED" || o.Status == "EXPIRED")
			}
		}
		for n, x := range ti.apps {
			st[n] = as[server.StockJSON](t, expect(t, e2eUntilFinal(t, x, "GET", "/v1/products/hot/stock", "", "", nil), http.StatusOK))
			settled = settled && st[n].Reserved == 0
		}
		if settled && st[0] == st[1] {
			break
		}
		require.False(t, time.Now().After(deadline), "not settled: %+v", st)
	}

	var sold, charges, refunds int64
	for i, orders := range placed {
		held := int64(0)
		for _, g := range orders {
			o, ok := final[g.id]
			require.True(t, ok, "buyer %d: order %s listed", i, g.id)
			want := "EXPIRED"
			switch {
			case g.cancelled:
				want = "CANCELLED"
			case g.paid:
				want = "PAID"
			}
			assert.Equal(t, want, o.Status, "buyer %d order %s: %+v", i, g.id, g)
			if g.paid {
				charges++
				if g.cancelled {
					refunds++
				}
			}
			if o.Status == "PAID" {
				held++
			}
		}
		assert.LessOrEqual(t, held, int64(maxLimit), "buyer %d: within every limit set", i)
		sold += held
	}
	t.Logf("%s: %d sold, %d charges, %d refunds, last setting %+v, stock %+v", what, sold, charges, refunds, last, st[0])
	assert.Equal(t, sold, st[0].Sold, "sold = units of PAID orders")
	assert.Equal(t, last.OnHand+last.Sold, st[0].OnHand+st[0].Sold, "on hand + sold as the last setting left them")
	assert.Equal(t, st[0].OnHand, st[0].Available)
	assert.Equal(t, last.BuyerLimit, st[0].BuyerLimit)
	stats := ti.sim.Stats()
	assert.Equal(t, []int64{charges, refunds}, []int64{int64(stats.Charges), int64(stats.Cancels)}, "one charge per payment, one refund per paid order cancelled")
	for _, x := range ti.apps {
		(&attackEnv{app: x, admin: admin}).requireAuditClean(t)
	}
}
