package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/server"
)

// TestSaleSurvivesRedisPause: a full-mode flash sale whose Redis (a container of the
// test's own) is paused for 5 s while buyers place and pay. Requests meeting the stalled
// Redis answer 503 dependency_unavailable with Retry-After, quickly (the figures are
// logged); none answers 500, no first attempt answers 409 for work it did; buyers that
// retry as told all get a final answer, and every invariant of the sale holds.
func TestSaleSurvivesRedisPause(t *testing.T) {
	rdb := testenv.OwnRedis(t)
	_, dsn := testenv.OwnMySQL(t)
	faultSale(t, dsn, rdb.Addr, "Redis paused 5 s", func() {
		rdb.Pause(t)
		time.Sleep(5 * time.Second)
		rdb.Unpause(t)
	})
}

// TestSaleSurvivesMySQLRestart: the same sale with its MySQL server (a container of the
// test's own) killed mid-sale and started again 3 s later.
func TestSaleSurvivesMySQLRestart(t *testing.T) {
	rdb := testenv.OwnRedis(t)
	db, dsn := testenv.OwnMySQL(t)
	faultSale(t, dsn, rdb.Addr, "MySQL killed and restarted", func() {
		db.Stop(t, 0)
		time.Sleep(3 * time.Second)
		db.Start(t)
	})
}

// attempt is one HTTP request of a buyer.
type attempt struct {
	route   string // "place" or "pay"
	n       int    // 1 for the first attempt of a request, 2+ for its retries
	start   time.Time
	took    time.Duration
	status  int
	code    string
	retry   string // Retry-After
	failure string // a transport error
}

// checkHonestAttempts fails the test for an attempt answered dishonestly during a fault:
// a 5xx other than 503, a 503 without Retry-After, a transport failure, or a first attempt
// refused as in progress (409: only a retry can meet its own earlier attempt's claim). It
// returns how many attempts got each answer ("route status code").
func checkHonestAttempts(t *testing.T, attempts []attempt) map[string]int {
	t.Helper()
	statuses := map[string]int{}
	for _, at := range attempts {
		statuses[fmt.Sprintf("%s %d %s", at.route, at.status, at.code)]++
		if at.status >= 500 && at.status != http.StatusServiceUnavailable || at.failure != "" {
			t.Errorf("%s attempt %d: %d %s %s", at.route, at.n, at.status, at.code, at.failure)
		}
		if at.status == http.StatusServiceUnavailable && at.retry == "" {
			t.Errorf("%s attempt %d: 503 %s without Retry-After", at.route, at.n, at.code)
		}
		if at.n == 1 && at.status == http.StatusConflict {
			t.Errorf("%s first attempt: 409 %s", at.route, at.code)
		}
	}
	return statuses
}

// saleLog collects every attempt of every buyer.
type saleLog struct {
	mu       sync.Mutex
	attempts []attempt
}

func (l *saleLog) add(a attempt) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.attempts = append(l.attempts, a)
}

// faultSale runs the sale on the given MySQL and Redis, calls inject on the test's
// goroutine once the sale is under way (it returns when the fault is over), and checks the
// end state.
func faultSale(t *testing.T, dsn, redisAddr, fault string, inject func()) {
	const buyers, units, clients = 200, 50, 40
	cfg, sim, setHook := fullConfig(t, dsn, redisAddr, 0)
	a := start(t, backend{name: "faults", config: func(*testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return cfg, sim, setHook
	}}, nil)
	admin := setup(t, a, "hot", 20_000, units)

	log := &saleLog{}
	type outcome struct {
		placed, paid  bool
		unfulfillable bool   // paid, but its stock was gone: refunded (see below)
		final         string // the final answer, for the report of a buyer that never got one
	}
	outcomes := make([]outcome, buyers)
	// call sends a request until it gets a final answer, retrying 503 and 409
	// request_in_progress after their Retry-After, as a well-behaved client does.
	call := func(route, method, path, tok, key string, body any) resp {
		deadline := time.Now().Add(3 * time.Minute)
		for n := 1; ; n++ {
			at := attempt{route: route, n: n, start: time.Now()}
			r, err := a.try(method, path, tok, key, body)
			at.took, at.status, at.retry = time.Since(at.start), r.Status, r.Header.Get("Retry-After")
			var p server.Problem
			if err != nil {
				at.failure = err.Error()
			} else if r.Status >= 400 && json.Unmarshal(r.Body, &p) == nil {
				at.code = p.Code
			}
			log.add(at)
			again := err != nil || r.Status == http.StatusServiceUnavailable ||
				(r.Status == http.StatusConflict && at.code == "request_in_progress")
			if !again || time.Now().After(deadline) {
				return r
			}
			pause := time.Second
			if s, err := strconv.Atoi(at.retry); err == nil && s > 0 && s <= 5 {
				pause = time.Duration(s) * time.Second
			}
			time.Sleep(pause)
		}
	}

	started := make(chan struct{})
	var startOnce sync.Once
	sold := make(chan struct{})
	go func() {
		defer close(sold)
		testkit.Parallel(buyers, clients, func(i int) {
			user := fmt.Sprintf("buyer-%03d", i)
			tok, err := server.IssueToken(testSecret, user, false, time.Hour, time.Now())
			if err != nil {
				outcomes[i].final = err.Error()
				return
			}
			if i == clients { // every client is busy: the sale is under way
				startOnce.Do(func() { close(started) })
			}
			r := call("place", "POST", "/v1/orders", tok, "order", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "hot", Qty: 1}}})
			outcomes[i].final = fmt.Sprintf("place %d %s", r.Status, r.Body)
			if r.Status != http.StatusCreated {
				return
			}
			outcomes[i].placed = true
			var o server.OrderJSON
			if jsonUnmarshal(r.Body, &o) != nil {
				return
			}
			r = call("pay", "POST", "/v1/orders/"+o.ID+"/pay", tok, "pay", server.PayJSON{Method: "CARD", Token: "tok_" + user})
			outcomes[i].final = fmt.Sprintf("pay %d %s", r.Status, r.Body)
			if r.Status == http.StatusOK && jsonUnmarshal(r.Body, &o) == nil {
				outcomes[i].paid = o.Status == "PAID"
				outcomes[i].unfulfillable = o.Status == "PAYMENT_FAILED" && o.FailureCode == "UNFULFILLABLE"
			}
		})
	}()
	<-started
	faultStart := time.Now()
	inject()
	faultEnd := time.Now()
	<-sold

	// Every answer was honest: no 500 (nor any 5xx but 503), every 503 with Retry-After,
	// no first attempt refused as "in progress" (only a retry can meet its own earlier
	// attempt's claim), no transport failure.
	var during []time.Duration    // requests started during the fault
	var overlapping time.Duration // the longest request the fault overlapped
	statuses := checkHonestAttempts(t, log.attempts)
	for _, at := range log.attempts {
		if !at.start.Before(faultStart) && at.start.Before(faultEnd) {
			during = append(during, at.took)
		}
		if at.start.Before(faultEnd) && at.start.Add(at.took).After(faultStart) {
			overlapping = max(overlapping, at.took)
		}
	}
	t.Logf("%s: answers %v", fault, statuses)
	if len(during) > 0 {
		slices.Sort(during)
		t.Logf("%s for %v: %d requests started during the fault took p50 %v, p99 %v, max %v", fault,
			faultEnd.Sub(faultStart).Round(time.Millisecond), len(during), during[len(during)/2],
			during[len(during)*99/100], during[len(during)-1])
	}
	t.Logf("%s: the longest request the fault overlapped took %v", fault, overlapping)

	// Every buyer got a final answer, consistent with the store: exactly the units were
	// paid, every other buyer was told "out of stock" — or, for an order whose place the
	// fault left in doubt (its commit's reply lost, so its stock reservation was given
	// back while the order was in fact stored), paid and refunded as UNFULFILLABLE, the
	// outcome commerce documents for an order whose stock is gone.
	var placed, paid, unfulfillable int
	for i, o := range outcomes {
		switch {
		case o.paid:
			paid++
			placed++
		case o.unfulfillable:
			unfulfillable++
			placed++
		case o.placed:
			placed++
			t.Errorf("buyer %d placed an order but it was not paid: %s", i, o.final)
		case !slices.Contains([]string{"place 422"}, o.final[:min(9, len(o.final))]):
			t.Errorf("buyer %d: no final answer: %s", i, o.final)
		}
	}
	if unfulfillable > 0 {
		t.Logf("%s: %d placed orders lost their stock to the fault and were refunded (UNFULFILLABLE)", fault, unfulfillable)
	}
	assert.Equal(t, units, paid)
	assert.Equal(t, paid+unfulfillable, placed)
	st := as[server.StockJSON](t, expect(t, a.call("GET", "/v1/products/hot/stock", "", "", nil), http.StatusOK))
	assert.Equal(t, []int64{0, 0, units}, []int64{st.Available, st.Reserved, st.Sold}, "no oversell; sold = paid orders")
	stats := sim.Stats()
	assert.Equal(t, placed, stats.Charges, "each placed order charged once")
	assert.Equal(t, unfulfillable, stats.Cancels, "every charge of an unfulfillable order refunded, nothing else")

	// It recovers by itself: the audit is clean once recovery has passed.
	var audit server.AuditJSON
	deadline := time.Now().Add(2 * time.Minute)
	for {
		audit = as[server.AuditJSON](t, expect(t, a.call("GET", "/v1/admin/audit", admin, "", nil), http.StatusOK))
		if audit.OK || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	require.True(t, audit.OK, "%v", audit.Discrepancies)
	assert.Equal(t, placed, audit.Orders)
}

// TestWritesDuringRedisPause: with the Redis of the shared write limit paused (accepting
// connections, answering nothing), writes that need no Redis (sign-ups: SQL alone) still
// complete, and only the first one waits for Redis, for the limiter's deadline; the others
// use this process's own bucket until the cool-down has passed. The waits are counted,
// not timed: the server's clock stands still until the test moves it. Once Redis answers
// again and the cool-down has passed, the writes are limited in Redis again.
func TestWritesDuringRedisPause(t *testing.T) {
	rdb := testenv.OwnRedis(t)
	var at atomic.Int64 // the server's clock, in Unix ns
	at.Store(time.Now().UnixNano())
	a := start(t, embedded, func(c *server.Config) {
		c.RedisAddr, c.WebhookSecret = rdb.Addr, string(testWebhookSecret)
		c.RateLimit, c.RateBurst = 1, 100
		// The limiter's deadline stays below the Redis client's (2 × 2 s with its retry),
		// yet no Redis that answers misses it on a loaded machine.
		c.RedisTimeout, c.RateLimitRedisTimeout = 2*time.Second, time.Second
	}, server.WithClock(func() time.Time { return time.Unix(0, at.Load()) }))
	users := 0
	signUp := func() {
		t.Helper()
		users++
		expect(t, a.call("POST", "/v1/members", "", "", server.SignUpJSON{
			LoginID: fmt.Sprintf("pause-%d", users), Password: "correct horse battery"}), http.StatusCreated)
	}
	stats := func() [3]int64 {
		asked, unanswered, local := server.WriteLimitStats(a.srv)
		return [3]int64{asked, unanswered, local}
	}
	signUp()
	require.Equal(t, [3]int64{1, 0, 0}, stats(), "asked Redis, unanswered, local")

	rdb.Pause(t)
	const n = 10
	for range n {
		signUp()
	}
	assert.Equal(t, [3]int64{2, 1, n}, stats(), "one sign-up waited for Redis; the others did not ask it")
	rdb.Unpause(t)

	// Past the cool-down a sign-up asks Redis again (each try once the call before it has
	// ended: a fresh connection may miss the deadline on a loaded machine), and once one
	// gets its answer in time, every sign-up asks Redis.
	for try := 0; ; try++ {
		require.Less(t, try, 10, "Redis never answered in time again")
		server.SettleWriteLimit(a.srv)
		at.Add(int64(server.WriteLimitCooldown))
		before := stats()
		signUp()
		if after := stats(); after[1] == before[1] {
			require.Equal(t, [3]int64{before[0] + 1, before[1], before[2]}, after)
			break
		}
	}
	before := stats()
	for range n {
		signUp()
	}
	assert.Equal(t, [3]int64{before[0] + n, before[1], before[2]}, stats(), "every sign-up asked Redis")
}
