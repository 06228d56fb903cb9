package server_test

import (
	"bufio"
	"bytes"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/member"
	"github.com/commercekit/commercekit/refserver/server"
)

// attackEnv is a full-mode server (MySQL and Redis in containers of the test's own,
// kfake Kafka, the PG simulator over HTTP) with a catalogue, members and orders in
// every state a probe needs.
type attackEnv struct {
	*app
	db, rdb *testenv.Own
	admin   string
	// alice is a member's session; tool a token of `refserver token` (no session).
	alice server.SessionJSON
	// unpaid, paid are orders of alice.
	unpaid, paid server.OrderJSON
}

func newAttackEnv(t *testing.T) *attackEnv {
	t.Helper()
	return newAttackEnvOn(t, testenv.OwnMySQL)
}

// newAttackEnvOn is newAttackEnv on the MySQL server, and with the DSN, that ownMySQL
// returns.
func newAttackEnvOn(t *testing.T, ownMySQL func(testing.TB) (*testenv.Own, string)) *attackEnv {
	t.Helper()
	rdb := testenv.OwnRedis(t)
	db, dsn := ownMySQL(t)
	cfg, sim, setHook := fullConfig(t, dsn, rdb.Addr, 0)
	a := start(t, backend{name: "attack", config: func(*testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return cfg, sim, setHook
	}}, nil, fastHash)
	e := &attackEnv{app: a, db: db, rdb: rdb}
	e.admin = setup(t, a, "p1", 9000, 100)
	e.alice = signUpAndLogin(t, a, "alice")
	tok := e.alice.AccessToken
	expect(t, a.call("POST", "/v1/cart/items", tok, "add-0", server.LineJSON{ProductID: "p1", Qty: 1}), http.StatusOK)
	e.unpaid = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", tok, "o-unpaid", server.PlaceOrderJSON{
		Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))
	e.paid = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", tok, "o-paid", server.PlaceOrderJSON{
		Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))
	expect(t, a.call("POST", "/v1/orders/"+e.paid.ID+"/pay", tok, "pay-paid", server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK)
	return e
}

// probe is one request of a sweep and what it got.
type probe struct {
	name         string
	method, path string
	tok, key     string
	body         any
	// ok are the answers besides 503 that are right for this request while the fault lasts.
	ok []int
	// got
	r    resp
	err  error
	took time.Duration
}

// sweep sends every probe at once and returns them answered.
func (e *attackEnv) sweep(probes []*probe) {
	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Go(func() {
			start := time.Now()
			p.r, p.err = e.try(p.method, p.path, p.tok, p.key, p.body)
			p.took = time.Since(start)
		})
	}
	wg.Wait()
}

// checkHonest fails the test for an answer that breaks the rules of a fault: a 5xx other
// than 503, a 503 without Retry-After, a transport failure, or an answer other than 503
// that the probe does not allow.
func checkHonest(t *testing.T, fault string, probes []*probe) {
	t.Helper()
	for _, p := range probes {
		var code string
		if p.err == nil && p.r.Status >= 400 {
			if pr, ok := decodeProblem(p.r.Body); ok {
				code = pr.Code
			}
		}
		t.Logf("%s: %-28s %d %-24s %v", fault, p.name, p.r.Status, code, p.took.Round(time.Millisecond))
		switch {
		case p.err != nil:
			t.Errorf("%s: %s: %v", fault, p.name, p.err)
		case p.r.Status == http.StatusServiceUnavailable:
			if p.r.Header.Get("Retry-After") == "" {
				t.Errorf("%s: %s: 503 %s without Retry-After", fault, p.name, code)
			}
		case !containsInt(p.ok, p.r.Status):
			t.Errorf("%s: %s: %d %s", fault, p.name, p.r.Status, p.r.Body)
		}
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func decodeProblem(b []byte) (server.Problem, bool) {
	var p server.Problem
	return p, jsonUnmarshal(b, &p) == nil && p.Code != ""
}

// routeSweep is a request to every route, each with the answers besides 503 that are right
// for it whatever backend is down. n makes the keys and names unique per sweep.
func (e *attackEnv) routeSweep(n int) []*probe {
	tok := e.alice.AccessToken
	k := func(s string) string { return fmt.Sprintf("%s-%d", s, n) }
	ok, created, accepted := http.StatusOK, http.StatusCreated, http.StatusAccepted
	return []*probe{
		{name: "healthz", method: "GET", path: "/healthz", ok: []int{ok}},
		{name: "products", method: "GET", path: "/v1/products", ok: []int{ok}},
		{name: "product", method: "GET", path: "/v1/products/p1", ok: []int{ok}},
		{name: "stock", method: "GET", path: "/v1/products/p1/stock", ok: []int{ok}},
		{name: "create product", method: "POST", path: "/v1/products", tok: e.admin,
			body: server.NewProductJSON{ID: k("new"), Name: "New", Price: 100, Stock: 5}, ok: []int{created}},
		{name: "price", method: "PUT", path: "/v1/products/p1/price", tok: e.admin, body: server.PriceJSON{Price: 9000}, ok: []int{ok}},
		{name: "set stock", method: "PUT", path: "/v1/products/" + k("new") + "/stock", tok: e.admin,
			body: server.SetStockJSON{OnHand: 7}, ok: []int{ok, http.StatusNotFound}}, // created concurrently, or not
		{name: "adjust stock", method: "POST", path: "/v1/products/p1/stock/adjustments", tok: e.admin,
			body: server.AdjustStockJSON{ID: k("adj"), Delta: 1, Reason: "sweep"}, ok: []int{ok}},
		{name: "place", method: "POST", path: "/v1/orders", tok: tok, key: k("place"),
			body: server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}, ok: []int{created}},
		{name: "orders", method: "GET", path: "/v1/orders", tok: tok, ok: []int{ok}},
		{name: "order", method: "GET", path: "/v1/orders/" + e.paid.ID, tok: tok, ok: []int{ok}},
		{name: "order payment", method: "GET", path: "/v1/orders/" + e.paid.ID + "/payment", tok: tok, ok: []int{ok}},
		{name: "pay", method: "POST", path: "/v1/orders/" + e.unpaid.ID + "/pay", tok: tok, key: k("pay"),
			body: server.PayJSON{Method: "CARD", Token: "tok_ok"}, ok: []int{ok, accepted}},
		{name: "points", method: "GET", path: "/v1/points", tok: tok, ok: []int{ok}},
		{name: "points history", method: "GET", path: "/v1/points/history", tok: tok, ok: []int{ok}},
		{name: "top-up", method: "POST", path: "/v1/points/top-ups", tok: tok, key: k("topup"),
			body: server.TopUpRequestJSON{Amount: 1000, Method: "CARD", Token: "tok_ok"}, ok: []int{created, accepted}},
		{name: "coupon template", method: "POST", path: "/v1/coupon-templates", tok: e.admin,
			body: server.CouponTemplateJSON{ID: k("tpl"), Kind: "fixed", Amount: 100, PerUserLimit: 5}, ok: []int{created}},
		{name: "issue coupon", method: "POST", path: "/v1/coupon-templates/tpl-p1/issue", tok: tok, key: k("issue"),
			ok: []int{created, http.StatusUnprocessableEntity}}, // per-user limit 1: once issued, 422
		{name: "coupons", method: "GET", path: "/v1/coupons", tok: tok, ok: []int{ok}},
		{name: "sign-up", method: "POST", path: "/v1/members", body: server.SignUpJSON{LoginID: k("member"), Password: "correct horse"},
			ok: []int{created}},
		{name: "login", method: "POST", path: "/v1/sessions", body: server.LoginJSON{LoginID: "alice", Password: "correct horse"},
			ok: []int{created}},
		{name: "cart", method: "GET", path: "/v1/cart", tok: tok, ok: []int{ok}},
		{name: "cart add", method: "POST", path: "/v1/cart/items", tok: tok, key: k("add"),
			body: server.LineJSON{ProductID: "p1", Qty: 1}, ok: []int{ok}},
		{name: "cart set", method: "PUT", path: "/v1/cart/items/p1", tok: tok, body: server.CartQtyJSON{Qty: 2}, ok: []int{ok}},
		{name: "rankings", method: "GET", path: "/v1/rankings", ok: []int{ok}},
		{name: "product metrics", method: "GET", path: "/v1/products/p1/metrics", ok: []int{ok}},
		{name: "audit", method: "GET", path: "/v1/admin/audit", tok: e.admin, ok: []int{ok}},
		{name: "dead letters", method: "GET", path: "/v1/admin/outbox/dead-letters", tok: e.admin, ok: []int{ok}},
		{name: "redrive", method: "POST", path: "/v1/admin/outbox/dead-letters/1/redrive", tok: e.admin, ok: []int{http.StatusNotFound}},
		{name: "consumers", method: "GET", path: "/v1/admin/consumers", tok: e.admin, ok: []int{ok}},
		{name: "consumer dead letters", method: "GET", path: "/v1/admin/consumers/" + collector.ConsumerName + "/dead-letters", tok: e.admin, ok: []int{ok}},
		{name: "consumer redrive", method: "POST", path: "/v1/admin/consumers/" + collector.ConsumerName + "/dead-letters/redrive", tok: e.admin, ok: []int{ok}},
		{name: "consumer skip", method: "POST", path: "/v1/admin/consumers/" + collector.ConsumerName + "/dead-letters/1/skip", tok: e.admin,
			ok: []int{http.StatusNotFound}},
		{name: "webhook (bad signature)", method: "POST", path: "/v1/payments/webhook", body: `{"x":1}`, ok: []int{http.StatusBadRequest, http.StatusUnauthorized}},
	}
}

// readyz returns /readyz's status and body.
func (e *attackEnv) readyz(t *testing.T) (int, server.Readiness) {
	t.Helper()
	r := e.call("GET", "/readyz", "", "", nil)
	return r.Status, as[server.Readiness](t, r)
}

// TestAttackRedisPausedSweep: every route, sent at once while the server's Redis is
// paused, answers honestly (its success, a business answer that is right whatever Redis
// does, or 503 with Retry-After; never 500), /readyz says Redis is down, and after Redis
// is back every route works and the audit is clean.
func TestAttackRedisPausedSweep(t *testing.T) {
	e := newAttackEnv(t)
	ready := e.sweepUnder(t, "Redis paused", "redis", func() { e.rdb.Pause(t) }, func() { e.rdb.Unpause(t) })
	assert.Equal(t, "ok", ready.Checks["database"])
}

// TestAttackMySQLPausedSweep: the same with MySQL paused.
func TestAttackMySQLPausedSweep(t *testing.T) {
	e := newAttackEnv(t)
	e.sweepUnder(t, "MySQL paused", "database", func() { e.db.Pause(t) }, func() { e.db.Unpause(t) })
}

// TestAttackMySQLDownSweep: the same with MySQL stopped (killed).
func TestAttackMySQLDownSweep(t *testing.T) {
	e := newAttackEnv(t)
	e.sweepUnder(t, "MySQL down", "database", func() { e.db.Stop(t, 0) }, func() { e.db.Start(t) })
}

// TestAttackMySQLPausedAnsweredAtOnce: requests on a paused MySQL (connections
// accepted, nothing answered) are answered 503 dependency_unavailable with Retry-After
// as soon as the server has found MySQL not answering, the one in flight when it paused
// and the ones after it alike, not when a read timeout ends: the DSN's read timeout here
// is an hour, longer than the request timeout (which would answer 503 timeout), so only
// a server that stops waiting on its own answers dependency_unavailable. /readyz says
// the database is down; after the unpause the same requests succeed.
func TestAttackMySQLPausedAnsweredAtOnce(t *testing.T) {
	e := newAttackEnvOn(t, func(tb testing.TB) (*testenv.Own, string) {
		db, dsn := testenv.OwnMySQL(tb)
		mc := testkit.Must(mysql.ParseDSN(dsn))(tb)
		mc.ReadTimeout, mc.WriteTimeout = time.Hour, time.Hour
		return db, mc.FormatDSN()
	})
	tok := e.alice.AccessToken
	get := func() (resp, error) { return e.try("GET", "/v1/orders/"+e.paid.ID, tok, "", nil) }
	add := func(key string) (resp, error) {
		return e.try("POST", "/v1/cart/items", tok, key, server.LineJSON{ProductID: "p1", Qty: 1})
	}
	expect(t, testkit.Must(get())(t), http.StatusOK)

	e.db.Pause(t)
	inFlight := make(chan resp, 1)
	go func() {
		r, err := get()
		assert.NoError(t, err)
		inFlight <- r
	}()
	unavailable := func(what string, r resp) {
		t.Helper()
		p, _ := decodeProblem(r.Body)
		assert.Equal(t, http.StatusServiceUnavailable, r.Status, "%s: %s", what, r.Body)
		assert.Equal(t, "dependency_unavailable", p.Code, "%s: %s", what, r.Body)
		assert.NotEmpty(t, r.Header.Get("Retry-After"), what)
	}
	unavailable("the read in flight when MySQL paused", <-inFlight)
	unavailable("a read after", testkit.Must(get())(t))
	unavailable("a write after", testkit.Must(add("paused-add"))(t))
	status, ready := e.readyz(t)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.NotEqual(t, "ok", ready.Checks["database"])

	e.db.Unpause(t)
	require.Eventually(t, func() bool { r, err := get(); return err == nil && r.Status == http.StatusOK }, time.Minute, 100*time.Millisecond)
	expect(t, testkit.Must(add("paused-add"))(t), http.StatusOK)
	e.requireAuditClean(t)
}

// TestAttackMySQLDiskFull: every route, sent at once while MySQL's disk is full, answers
// honestly (its success, or 503 with Retry-After; never 500), and once space is freed
// every route works and the audit is clean.
func TestAttackMySQLDiskFull(t *testing.T) {
	e := newAttackEnvOn(t, func(tb testing.TB) (*testenv.Own, string) { return testenv.OwnMySQLOnDisk(tb, 512<<20) })
	code, out := e.db.Exec(t, "sh", "-c", "dd if=/dev/zero of=/var/lib/mysql/filler bs=1M; df -k /var/lib/mysql")
	t.Logf("filled (dd exit %d): %s", code, out)
	// The tables' files still have free pages: write until a write needs more.
	tok := e.alice.AccessToken
	var first resp
	for i := range 2000 {
		r := e.call("POST", "/v1/cart/items", tok, fmt.Sprintf("fill-%d", i), server.LineJSON{ProductID: "p1", Qty: 1})
		if r.Status != http.StatusOK {
			first = r
			t.Logf("write %d: %d %s", i, r.Status, r.Body)
			break
		}
		r = e.call("DELETE", "/v1/cart/items/p1", tok, "", nil)
	}
	require.NotZero(t, first.Status, "no write failed on a full disk")
	probes := e.routeSweep(1)
	e.sweep(probes)
	code, out = e.db.Exec(t, "rm", "-f", "/var/lib/mysql/filler")
	require.Zero(t, code, out)
	checkHonest(t, "MySQL disk full", append(probes, &probe{name: "the first write refused", r: first, ok: []int{http.StatusOK}}))
	e.afterFault(t)
}

// TestAttackMySQLGlobalReadLock: while a global read lock is held (FLUSH TABLES WITH
// READ LOCK, as backup and snapshot tools take it), MySQL answers pings and reads but
// every write waits for the lock. Every route, sent at once, answers honestly (its
// success, or 503 with Retry-After), and a write is answered by the server ending its wait
// (503 contention, after one lock wait), not by the request timeout (503 timeout): a lock
// wait timeout is not waited out again and again. Once the watch's write probe has found
// writes held, /readyz says so (degraded, still ready: reads work) and every write is
// refused at once (503 dependency_unavailable) instead of holding a pooled connection for
// the lock wait, which under load would fill the pool and hold up the reads; every read
// still gets its answer, a HEAD as its GET (a load balancer's HEAD /readyz must not see
// 503 on every instance during a backup: the mux serves HEAD with the GET route), and a
// logout of a token already logged out, which writes nothing, its 204. Once the lock is
// released every route works and the audit is clean.
func TestAttackMySQLGlobalReadLock(t *testing.T) {
	var dsn string
	e := newAttackEnvOn(t, func(tb testing.TB) (*testenv.Own, string) {
		db, d := testenv.OwnMySQL(tb)
		dsn = d
		return db, d
	})
	admin, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close() })
	loggedOut := signUpAndLogin(t, e.app, "carol").AccessToken
	expect(t, e.call("DELETE", "/v1/sessions", loggedOut, "", nil), http.StatusNoContent)
	lock, err := admin.Conn(t.Context())
	require.NoError(t, err)
	_, err = lock.ExecContext(t.Context(), "FLUSH TABLES WITH READ LOCK")
	require.NoError(t, err)
	probes := e.routeSweep(1)
	e.sweep(probes)
	var ready server.Readiness
	require.Eventually(t, func() bool {
		var status int
		status, ready = e.readyz(t)
		return status == http.StatusOK && ready.Checks["mysql_writes"] != "ok" && ready.Checks["mysql_writes"] != ""
	}, time.Minute, 100*time.Millisecond, "the watch never found writes held")
	assert.Equal(t, "degraded", ready.Status, "%+v", ready)
	held := e.routeSweep(2)
	e.sweep(held)
	for _, path := range []string{"/readyz", "/healthz", "/v1/products", "/v1/products/p1", "/v1/products/p1/stock"} {
		head := e.call(http.MethodHead, path, "", "", nil)
		assert.Equal(t, http.StatusOK, head.Status, "HEAD %s while writes are held: %v", path, head.Header)
	}
	head := e.call(http.MethodHead, "/v1/orders/"+e.paid.ID, e.alice.AccessToken, "", nil)
	assert.Equal(t, http.StatusOK, head.Status, "HEAD of an order while writes are held: %v", head.Header)
	logout := e.call("DELETE", "/v1/sessions", loggedOut, "", nil)
	assert.Equal(t, http.StatusNoContent, logout.Status, "a logout sent again while writes are held: %s", logout.Body)
	_, err = lock.ExecContext(t.Context(), "UNLOCK TABLES")
	require.NoError(t, err)
	require.NoError(t, lock.Close())
	checkHonest(t, "MySQL under a global read lock", probes)
	for _, p := range probes {
		if pr, ok := decodeProblem(p.r.Body); ok && p.r.Status == http.StatusServiceUnavailable {
			assert.NotEqual(t, "timeout", pr.Code, "%s: waited out by the request timeout, not ended by the server: %s", p.name, p.r.Body)
		}
	}
	checkHonest(t, "writes found held", held)
	for _, p := range held {
		if p.method == http.MethodGet {
			assert.Contains(t, p.ok, p.r.Status, "%s: a read during the lock: %s", p.name, p.r.Body)
			continue
		}
		pr, _ := decodeProblem(p.r.Body)
		assert.Equal(t, "dependency_unavailable", pr.Code, "%s: a write once writes were found held: %d %s", p.name, p.r.Status, p.r.Body)
	}
	e.afterFault(t)
}

// sweepUnder sends every route at once during fault (undone by heal), checks that each
// answered honestly and that /readyz was 503 with the check down failing, then that the
// server works again (afterFault). It returns /readyz's answer during the fault.
func (e *attackEnv) sweepUnder(t *testing.T, what, down string, fault, heal func()) server.Readiness {
	t.Helper()
	fault()
	probes := e.routeSweep(1)
	e.sweep(probes)
	status, ready := e.readyz(t)
	heal()
	checkHonest(t, what, probes)
	assert.Equal(t, http.StatusServiceUnavailable, status, "%+v", ready)
	assert.NotEqual(t, "ok", ready.Checks[down])
	e.afterFault(t)
	return ready
}

// afterFault checks that the server works again once the fault is over: every route of
// a sweep gets its success, each sent again as a client would (the same request, the
// same key) while it does not, until recovery has run; /readyz says ready, and the audit
// is clean.
func (e *attackEnv) afterFault(t *testing.T) {
	t.Helper()
	// The sweep pays an unpaid order, which a pay sent during the fault may have paid (a
	// fault that fails only some writes): a fresh one.
	e.unpaid = as[server.OrderJSON](t, expect(t, e.untilFinal(t, "place after the fault", "POST", "/v1/orders",
		e.alice.AccessToken, "after-fault-unpaid", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}),
		http.StatusCreated))
	deadline := time.Now().Add(time.Minute)
	for pending := e.routeSweep(100); ; {
		var bad []string
		left := pending[:0]
		for _, p := range pending {
			if p.r, p.err = e.try(p.method, p.path, p.tok, p.key, p.body); p.err != nil || !containsInt(p.ok, p.r.Status) {
				bad = append(bad, fmt.Sprintf("%s: %d %s %v", p.name, p.r.Status, p.r.Body, p.err))
				left = append(left, p)
			}
		}
		if pending = left; len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the fault:\n%s", strings.Join(bad, "\n"))
		}
		time.Sleep(time.Second)
	}
	status, ready := e.readyz(t)
	assert.Equal(t, http.StatusOK, status, "%+v", ready)
	e.requireAuditClean(t)
}

// replayed checks a scenario's request whose reply lost the statements or commands lost: its
// first answer is its final one, 503 with Retry-After, or 202; replayed with its key until
// final, it ends as the scenario says, checked by the scenario as a subtest.
func (e *attackEnv) replayed(t *testing.T, sc lostScenario, what, tok, path, caller string, body any, r resp, lost []string) {
	t.Helper()
	if r.Status != sc.final && r.Status != http.StatusServiceUnavailable && r.Status != http.StatusAccepted {
		t.Errorf("%s: first answer %d %s (lost %q)", what, r.Status, r.Body, lost)
	}
	if r.Status == http.StatusServiceUnavailable && r.Header.Get("Retry-After") == "" {
		t.Errorf("%s: 503 without Retry-After", what)
	}
	final := e.untilFinal(t, what, sc.method, path, caller, sc.key, body)
	if assert.Equal(t, sc.final, final.Status, "%s: %s (lost %q)", what, final.Body, lost) {
		t.Run(what, func(t *testing.T) { sc.check(t, e, tok, path, final) })
	}
}

// requireAuditClean waits, a minute at most, for the audit to come out clean (recovery and
// the sweepers finishing what the faults left), and fails the test if it does not.
func (e *attackEnv) requireAuditClean(t *testing.T) {
	t.Helper()
	var audit server.AuditJSON
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		audit = as[server.AuditJSON](t, expect(t, e.call("GET", "/v1/admin/audit", e.admin, "", nil), http.StatusOK))
		if audit.OK || time.Now().After(deadline) {
			break
		}
	}
	require.True(t, audit.OK, "%v", audit.Discrepancies)
}

// lossyLink is a TCP proxy between the server and its MySQL (or Redis) that can lose the
// reply of a statement: armed with a predicate on the text of the statements the server
// sends (COM_QUERY; a Redis command's words), it forwards a matching statement, waits for
// the answer — so the statement has run, a COMMIT has committed — and then drops that
// connection, both ways, instead of passing the answer on. That is the fault of a restart
// or a network cut at the worst moment: the work is done, its caller cannot know it.
type lossyLink struct {
	ln    net.Listener
	mu    sync.Mutex
	match func(query string) bool // nil: disarmed
	// trigger, when set, limits match to the statements of a connection that sent a
	// statement trigger accepts first (a request's transaction, not a background loop's).
	trigger func(query string) bool
	lost    []string // the statements whose reply was lost
	// holding, when set, holds back a client's resend of a statement whose reply was lost
	// (see holdResends).
	holding *resendHold
}

// newLossyLink listens on loopback and forwards to target until the test ends.
func newLossyLink(t *testing.T, target string) *lossyLink {
	return newLink(t, target, testenv.MySQLPacket)
}

// newLossyRedisLink is newLossyLink for Redis.
func newLossyRedisLink(t *testing.T, target string) *lossyLink {
	return newLink(t, target, testenv.RedisCommand)
}

// newLink starts a lossyLink to target, which reads the statements the server sends with
// frame (their bytes, and their text: "" for none), until the test ends.
func newLink(t *testing.T, target string, frame func(*bufio.Reader) ([]byte, string, error)) *lossyLink {
	t.Helper()
	l := &lossyLink{}
	l.ln = testenv.ProxyListener(t, func(c net.Conn) {
		var triggered bool // this connection sent a statement the trigger accepts
		testenv.Proxy(c, target, frame, func(text string) testenv.Cut {
			l.holdBack(text)
			return testenv.Cut{After: l.lose(text, &triggered)}
		})
	})
	return l
}

// Addr is the proxy's address.
func (l *lossyLink) Addr() string { return l.ln.Addr().String() }

// armAfter makes the link lose the replies of the statements match accepts, until disarm;
// with a trigger, only the reply of the first statement match accepts on a connection that
// sent a statement trigger accepts before it.
func (l *lossyLink) armAfter(trigger, match func(query string) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.match, l.trigger, l.lost = match, trigger, nil
	if trigger != nil {
		once := match
		l.match = func(q string) bool { return len(l.lost) == 0 && once(q) }
	}
}

// disarm stops losing replies and returns the statements whose reply was lost.
func (l *lossyLink) disarm() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.match, l.trigger = nil, nil
	return l.lost
}

// lose reports whether the reply to query must be lost, and records it; triggered says
// whether the connection sent a statement the trigger accepts, and is updated.
func (l *lossyLink) lose(query string, triggered *bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.match == nil {
		*triggered = false
		return false
	}
	if l.trigger != nil && !*triggered {
		*triggered = l.trigger(query)
		return false
	}
	if !l.match(query) {
		return false
	}
	l.lost = append(l.lost, query)
	return true
}

// lossyEnv is newAttackEnv with its MySQL behind a lossyLink.
func newLossyEnv(t *testing.T) (*attackEnv, *lossyLink) {
	t.Helper()
	rdb := testenv.OwnRedis(t)
	db, dsn := testenv.OwnMySQL(t)
	mc, err := mysql.ParseDSN(dsn)
	require.NoError(t, err)
	link := newLossyLink(t, mc.Addr)
	mc.Addr = link.Addr()
	cfg, sim, setHook := fullConfig(t, mc.FormatDSN(), rdb.Addr, 0)
	a := start(t, backend{name: "lossy", config: func(*testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return cfg, sim, setHook
	}}, nil, fastHash)
	e := &attackEnv{app: a, db: db, rdb: rdb}
	e.admin = setup(t, a, "p1", 9000, 1000)
	e.alice = signUpAndLogin(t, a, "alice")
	return e, link
}

// lost sends a request with the replies of the statements match accepts lost, and
// returns its answer and the statements lost.
func (e *attackEnv) lost(t *testing.T, link *lossyLink, match func(string) bool, method, path, tok, key string, body any) (resp, []string) {
	t.Helper()
	return e.lostAfter(t, link, nil, match, method, path, tok, key, body)
}

// lostAfter is lost with the link armed by armAfter(trigger, match).
func (e *attackEnv) lostAfter(t *testing.T, link *lossyLink, trigger, match func(string) bool, method, path, tok, key string, body any) (resp, []string) {
	t.Helper()
	link.armAfter(trigger, match)
	r, err := e.try(method, path, tok, key, body)
	lost := link.disarm()
	require.NoError(t, err)
	return r, lost
}

// isRead matches a SELECT.
func isRead(q string) bool { return strings.HasPrefix(strings.ToUpper(strings.TrimSpace(q)), "SELECT") }

// isWrite matches a statement that changes data, or a COMMIT.
func isWrite(q string) bool {
	q = strings.ToUpper(strings.TrimSpace(q))
	for _, p := range []string{"INSERT", "UPDATE", "DELETE", "COMMIT", "REPLACE"} {
		if strings.HasPrefix(q, p) {
			return true
		}
	}
	return false
}

// untilFinal sends a request again while it answers 503, 409 request_in_progress or 202
// (the PG's answer not known yet), as a client told to retry does, and returns the final
// answer; every answer must be honest.
func (e *attackEnv) untilFinal(t *testing.T, what, method, path, tok, key string, body any) resp {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		r := e.call(method, path, tok, key, body)
		again := r.Status == http.StatusServiceUnavailable || r.Status == http.StatusAccepted
		if p, ok := decodeProblem(r.Body); ok && p.Code == "request_in_progress" {
			again = true
		}
		if r.Status >= 500 && r.Status != http.StatusServiceUnavailable {
			t.Errorf("%s: %d %s", what, r.Status, r.Body)
		}
		if r.Status == http.StatusServiceUnavailable && r.Header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After: %s", what, r.Body)
		}
		if !again || time.Now().After(deadline) {
			return r
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// lostScenario is a write whose replies the lossyLink loses, and the exact end state its
// replays must reach.
type lostScenario struct {
	name string
	// prep readies the user's state and returns the request's path.
	prep        func(t *testing.T, e *attackEnv, tok string) string
	method, key string
	body        any
	// admin: the request is the admin's (the user still names what prep makes); bodyOf,
	// when set, is the body for the user, instead of body.
	admin  bool
	bodyOf func(user string) any
	final  int
	check  func(t *testing.T, e *attackEnv, tok, path string, final resp)
}

// request returns the token and body of the scenario's request for user (holding tok).
func (sc lostScenario) request(e *attackEnv, tok, user string) (string, any) {
	body := sc.body
	if sc.bodyOf != nil {
		body = sc.bodyOf(user)
	}
	if sc.admin {
		return e.admin, body
	}
	return tok, body
}

// claimsUser returns the subject of a token of the test's secret.
func (e *attackEnv) claimsUser(t *testing.T, tok string) string {
	t.Helper()
	var c server.Claims
	_, _, err := jwt.NewParser().ParseUnverified(tok, &c)
	require.NoError(t, err)
	return c.Subject
}

func lostScenarios() []lostScenario {
	var lastCoupon string // the coupon the last prep issued
	// place places a one-unit order for a scenario's prep, sent again while it answers 503
	// (the stock may still be rebuilding after the last scenario's lost reply).
	place := func(t *testing.T, e *attackEnv, tok, key string) server.OrderJSON {
		return as[server.OrderJSON](t, expect(t, e.untilFinal(t, "prep", "POST", "/v1/orders", tok, key, server.PlaceOrderJSON{
			Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))
	}
	orders := func(t *testing.T, e *attackEnv, tok string) []server.OrderJSON {
		return as[server.OrderPageJSON](t, expect(t, e.call("GET", "/v1/orders", tok, "", nil), http.StatusOK)).Orders
	}
	return []lostScenario{
		{name: "cart add", method: "POST", key: "add", body: server.LineJSON{ProductID: "p1", Qty: 2}, final: http.StatusOK,
			prep: func(*testing.T, *attackEnv, string) string { return "/v1/cart/items" },
			check: func(t *testing.T, e *attackEnv, tok, _ string, _ resp) {
				c := as[server.CartJSON](t, expect(t, e.call("GET", "/v1/cart", tok, "", nil), http.StatusOK))
				require.Len(t, c.Items, 1)
				assert.Equal(t, int64(2), c.Items[0].Qty, "added once")
			}},
		{name: "checkout", method: "POST", key: "co", body: server.PlaceOrderJSON{FromCart: true}, final: http.StatusCreated,
			prep: func(t *testing.T, e *attackEnv, tok string) string {
				expect(t, e.call("POST", "/v1/cart/items", tok, "add", server.LineJSON{ProductID: "p1", Qty: 2}), http.StatusOK)
				return "/v1/orders"
			},
			check: func(t *testing.T, e *attackEnv, tok, _ string, final resp) {
				os := orders(t, e, tok)
				require.Len(t, os, 1, "one order")
				assert.Equal(t, os[0].ID, as[server.OrderJSON](t, final).ID)
				assert.Empty(t, as[server.CartJSON](t, e.call("GET", "/v1/cart", tok, "", nil)).Items)
			}},
		{name: "place", method: "POST", key: "pl", body: server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}},
			final: http.StatusCreated,
			prep:  func(*testing.T, *attackEnv, string) string { return "/v1/orders" },
			check: func(t *testing.T, e *attackEnv, tok, _ string, final resp) {
				os := orders(t, e, tok)
				require.Len(t, os, 1, "one order")
				assert.Equal(t, os[0].ID, as[server.OrderJSON](t, final).ID)
			}},
		{name: "pay", method: "POST", key: "pay", body: server.PayJSON{Method: "CARD", Token: "tok_ok"}, final: http.StatusOK,
			prep: func(t *testing.T, e *attackEnv, tok string) string {
				return "/v1/orders/" + place(t, e, tok, "pl").ID + "/pay"
			},
			check: func(t *testing.T, e *attackEnv, tok, _ string, final resp) {
				o := as[server.OrderJSON](t, final)
				assert.Equal(t, "PAID", o.Status)
				assert.Equal(t, 1, e.sim.Charges(o.PaymentID), "charged once")
			}},
		{name: "cancel paid", method: "POST", final: http.StatusOK,
			prep: func(t *testing.T, e *attackEnv, tok string) string {
				o := place(t, e, tok, "pl")
				expect(t, e.call("POST", "/v1/orders/"+o.ID+"/pay", tok, "pay", server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK)
				return "/v1/orders/" + o.ID + "/cancel"
			},
			check: func(t *testing.T, e *attackEnv, tok, _ string, final resp) {
				o := as[server.OrderJSON](t, final)
				assert.Equal(t, "CANCELLED", o.Status)
				p := as[server.PaymentJSON](t, expect(t, e.call("GET", "/v1/orders/"+o.ID+"/payment", tok, "", nil), http.StatusOK))
				assert.Equal(t, p.Amount, p.Refunded, "refunded once, in full")
				assert.Len(t, p.Refunds, 1)
			}},
		{name: "top-up", method: "POST", key: "tu", body: server.TopUpRequestJSON{Amount: 1000, Method: "CARD", Token: "tok_ok"},
			final: http.StatusCreated,
			prep:  func(*testing.T, *attackEnv, string) string { return "/v1/points/top-ups" },
			check: func(t *testing.T, e *attackEnv, tok, _ string, final resp) {
				tu := as[server.TopUpJSON](t, final)
				assert.Equal(t, "COMPLETED", tu.Status)
				assert.Equal(t, 1, e.sim.Charges(tu.PaymentID), "charged once")
				b := as[server.BalanceJSON](t, expect(t, e.call("GET", "/v1/points", tok, "", nil), http.StatusOK))
				assert.Equal(t, int64(1000), b.Available)
			}},
		{name: "issue coupon", method: "POST", key: "iss", final: http.StatusCreated,
			prep: func(*testing.T, *attackEnv, string) string { return "/v1/coupon-templates/tpl-many/issue" },
			check: func(t *testing.T, e *attackEnv, tok, _ string, final resp) {
				w := as[server.CouponPageJSON](t, expect(t, e.call("GET", "/v1/coupons", tok, "", nil), http.StatusOK))
				require.Len(t, w.Coupons, 1, "issued once")
				assert.Equal(t, w.Coupons[0].ID, as[server.CouponJSON](t, final).ID)
			}},
		{name: "create product", method: "POST", admin: true, final: http.StatusCreated,
			bodyOf: func(user string) any {
				return server.NewProductJSON{ID: "prod-" + user, Name: "New", Price: 500, Stock: 7}
			},
			prep: func(*testing.T, *attackEnv, string) string { return "/v1/products" },
			check: func(t *testing.T, e *attackEnv, _, _ string, final resp) {
				p := as[server.ProductJSON](t, final)
				// A read while the stock rebuilds after the lost reply is 503: read again.
				st := as[server.StockJSON](t, expect(t, e.untilFinal(t, "check", "GET", "/v1/products/"+p.ID+"/stock", "", "", nil), http.StatusOK))
				assert.Equal(t, [3]int64{7, 0, 0}, [3]int64{st.Available, st.Reserved, st.Sold})
			}},
		{name: "set stock", method: "PUT", admin: true, body: server.SetStockJSON{OnHand: 9}, final: http.StatusOK,
			prep: func(t *testing.T, e *attackEnv, tok string) string {
				// The last scenario's lost reply may have left the stock rebuilding from its
				// journal (a setting's lost COMMIT fails closed): 503 until the healer is done.
				id := "stock-" + e.claimsUser(t, tok)
				expect(t, e.untilFinal(t, "prep", "POST", "/v1/products", e.admin, "", server.NewProductJSON{ID: id, Name: "S", Price: 500, Stock: 3}), http.StatusCreated)
				expect(t, e.untilFinal(t, "prep", "POST", "/v1/orders", tok, "pl", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: id, Qty: 1}}}), http.StatusCreated)
				return "/v1/products/" + id + "/stock"
			},
			check: func(t *testing.T, e *attackEnv, _, path string, _ resp) {
				st := as[server.StockJSON](t, expect(t, e.untilFinal(t, "check", "GET", path, "", "", nil), http.StatusOK))
				assert.Equal(t, [3]int64{8, 1, 0}, [3]int64{st.Available, st.Reserved, st.Sold}, "on hand 9, one reserved")
			}},
		{name: "adjust stock", method: "POST", admin: true, final: http.StatusOK,
			bodyOf: func(user string) any { return server.AdjustStockJSON{ID: "adj-" + user, Delta: 2, Reason: "restock"} },
			prep: func(t *testing.T, e *attackEnv, tok string) string {
				// As for set stock: the stock may be rebuilding after the last scenario.
				id := "adj-" + e.claimsUser(t, tok)
				expect(t, e.untilFinal(t, "prep", "POST", "/v1/products", e.admin, "", server.NewProductJSON{ID: id, Name: "A", Price: 500, Stock: 3}), http.StatusCreated)
				expect(t, e.untilFinal(t, "prep", "POST", "/v1/orders", tok, "pl", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: id, Qty: 1}}}), http.StatusCreated)
				return "/v1/products/" + id + "/stock/adjustments"
			},
			check: func(t *testing.T, e *attackEnv, tok, path string, _ resp) {
				st := as[server.StockJSON](t, expect(t, e.untilFinal(t, "check", "GET", strings.TrimSuffix(path, "/adjustments"), "", "", nil), http.StatusOK))
				assert.Equal(t, [4]int64{5, 4, 1, 0}, [4]int64{st.OnHand, st.Available, st.Reserved, st.Sold}, "3 on hand, 2 added once, one reserved")
			}},
		{name: "coupon template", method: "POST", admin: true, final: http.StatusCreated,
			bodyOf: func(user string) any {
				return server.CouponTemplateJSON{ID: "tpl-" + user, Kind: "fixed", Amount: 100, TotalQuantity: 10, PerUserLimit: 1}
			},
			prep: func(*testing.T, *attackEnv, string) string { return "/v1/coupon-templates" },
			check: func(t *testing.T, e *attackEnv, tok, _ string, final resp) {
				tpl := as[server.CouponTemplateJSON](t, final)
				expect(t, e.call("POST", "/v1/coupon-templates/"+tpl.ID+"/issue", tok, "iss", nil), http.StatusCreated)
			}},
		{name: "cancel unpaid", method: "POST", final: http.StatusOK,
			prep: func(t *testing.T, e *attackEnv, tok string) string {
				return "/v1/orders/" + place(t, e, tok, "pl").ID + "/cancel"
			},
			check: func(t *testing.T, e *attackEnv, tok, _ string, final resp) {
				assert.Equal(t, "CANCELLED", as[server.OrderJSON](t, final).Status)
			}},
		{name: "cart remove", method: "DELETE", final: http.StatusOK,
			prep: func(t *testing.T, e *attackEnv, tok string) string {
				expect(t, e.call("POST", "/v1/cart/items", tok, "add", server.LineJSON{ProductID: "p1", Qty: 2}), http.StatusOK)
				return "/v1/cart/items/p1"
			},
			check: func(t *testing.T, e *attackEnv, tok, _ string, _ resp) {
				assert.Empty(t, as[server.CartJSON](t, expect(t, e.call("GET", "/v1/cart", tok, "", nil), http.StatusOK)).Items)
			}},
		{name: "place with coupon and points", method: "POST", key: "pl", final: http.StatusCreated,
			bodyOf: func(string) any {
				return server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}, CouponID: lastCoupon, Points: 1000}
			},
			prep: func(t *testing.T, e *attackEnv, tok string) string {
				expect(t, e.call("POST", "/v1/points/top-ups", tok, "tu", server.TopUpRequestJSON{Amount: 5000, Method: "CARD", Token: "tok_ok"}), http.StatusCreated)
				lastCoupon = as[server.CouponJSON](t, expect(t, e.call("POST", "/v1/coupon-templates/tpl-many/issue", tok, "iss", nil), http.StatusCreated)).ID
				return "/v1/orders"
			},
			check: func(t *testing.T, e *attackEnv, tok, _ string, final resp) {
				o := as[server.OrderJSON](t, final)
				assert.Equal(t, [3]int64{100, 1000, 7900}, [3]int64{o.Discount, o.Points, o.AmountDue})
				require.Len(t, orders(t, e, tok), 1, "one order")
				b := as[server.BalanceJSON](t, expect(t, e.call("GET", "/v1/points", tok, "", nil), http.StatusOK))
				assert.Equal(t, [3]int64{4000, 1000, 5000}, [3]int64{b.Available, b.Held, b.Total}, "held once")
				w := as[server.CouponPageJSON](t, expect(t, e.call("GET", "/v1/coupons", tok, "", nil), http.StatusOK))
				require.Len(t, w.Coupons, 1)
				assert.Equal(t, o.ID, w.Coupons[0].OrderID)
			}},
		{name: "pay with points", method: "POST", key: "pl", final: http.StatusCreated,
			body: server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}, Points: 9000, PayWithPoints: true},
			prep: func(t *testing.T, e *attackEnv, tok string) string {
				expect(t, e.call("POST", "/v1/points/top-ups", tok, "tu", server.TopUpRequestJSON{Amount: 10000, Method: "CARD", Token: "tok_ok"}), http.StatusCreated)
				return "/v1/orders"
			},
			check: func(t *testing.T, e *attackEnv, tok, _ string, final resp) {
				assert.Equal(t, "PAID", as[server.OrderJSON](t, final).Status)
				require.Len(t, orders(t, e, tok), 1, "one order")
				b := as[server.BalanceJSON](t, expect(t, e.call("GET", "/v1/points", tok, "", nil), http.StatusOK))
				assert.Equal(t, [3]int64{1000, 0, 1000}, [3]int64{b.Available, b.Held, b.Total}, "spent once")
			}},
		{name: "checkout with points", method: "POST", key: "co", final: http.StatusCreated,
			body: server.PlaceOrderJSON{FromCart: true, Points: 9000, PayWithPoints: true},
			prep: func(t *testing.T, e *attackEnv, tok string) string {
				expect(t, e.call("POST", "/v1/points/top-ups", tok, "tu", server.TopUpRequestJSON{Amount: 10000, Method: "CARD", Token: "tok_ok"}), http.StatusCreated)
				expect(t, e.call("POST", "/v1/cart/items", tok, "add", server.LineJSON{ProductID: "p1", Qty: 1}), http.StatusOK)
				return "/v1/orders"
			},
			check: func(t *testing.T, e *attackEnv, tok, _ string, final resp) {
				assert.Equal(t, "PAID", as[server.OrderJSON](t, final).Status)
				require.Len(t, orders(t, e, tok), 1, "one order")
				assert.Empty(t, as[server.CartJSON](t, e.call("GET", "/v1/cart", tok, "", nil)).Items)
				b := as[server.BalanceJSON](t, expect(t, e.call("GET", "/v1/points", tok, "", nil), http.StatusOK))
				assert.Equal(t, [3]int64{1000, 0, 1000}, [3]int64{b.Available, b.Held, b.Total}, "spent once")
			}},
		{name: "cancel with coupon and points", method: "POST", final: http.StatusOK,
			prep: func(t *testing.T, e *attackEnv, tok string) string {
				expect(t, e.call("POST", "/v1/points/top-ups", tok, "tu", server.TopUpRequestJSON{Amount: 5000, Method: "CARD", Token: "tok_ok"}), http.StatusCreated)
				c := as[server.CouponJSON](t, expect(t, e.call("POST", "/v1/coupon-templates/tpl-many/issue", tok, "iss", nil), http.StatusCreated))
				o := as[server.OrderJSON](t, expect(t, e.call("POST", "/v1/orders", tok, "pl", server.PlaceOrderJSON{
					Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}, CouponID: c.ID, Points: 1000}), http.StatusCreated))
				expect(t, e.call("POST", "/v1/orders/"+o.ID+"/pay", tok, "pay", server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK)
				return "/v1/orders/" + o.ID + "/cancel"
			},
			check: func(t *testing.T, e *attackEnv, tok, _ string, final resp) {
				o := as[server.OrderJSON](t, final)
				assert.Equal(t, "CANCELLED", o.Status)
				p := as[server.PaymentJSON](t, expect(t, e.call("GET", "/v1/orders/"+o.ID+"/payment", tok, "", nil), http.StatusOK))
				assert.Equal(t, [2]int64{7900, 7900}, [2]int64{p.Amount, p.Refunded}, "refunded once, in full")
				b := as[server.BalanceJSON](t, expect(t, e.call("GET", "/v1/points", tok, "", nil), http.StatusOK))
				assert.Equal(t, [3]int64{5000, 0, 5000}, [3]int64{b.Available, b.Held, b.Total}, "the points back once, the reward taken back once")
				w := as[server.CouponPageJSON](t, expect(t, e.call("GET", "/v1/coupons", tok, "", nil), http.StatusOK))
				require.Len(t, w.Coupons, 1)
				assert.Equal(t, "available", w.Coupons[0].State, "the coupon back")
			}},
		{name: "cart set", method: "PUT", body: server.CartQtyJSON{Qty: 3}, final: http.StatusOK,
			prep: func(*testing.T, *attackEnv, string) string { return "/v1/cart/items/p1" },
			check: func(t *testing.T, e *attackEnv, tok, _ string, _ resp) {
				c := as[server.CartJSON](t, expect(t, e.call("GET", "/v1/cart", tok, "", nil), http.StatusOK))
				require.Len(t, c.Items, 1)
				assert.Equal(t, int64(3), c.Items[0].Qty)
			}},
	}
}

// TestAttackLostReplies: every write of a user, with the reply of its n-th COMMIT (or of
// its n-th statement changing data) lost, answers 503 with Retry-After (or its success,
// when the lost reply was another request's), and its replays reach the one effect: one
// cart line, one order, one charge, one refund, one coupon, the points once.
func TestAttackLostReplies(t *testing.T) {
	e, link := newLossyEnv(t)
	expect(t, e.call("POST", "/v1/coupon-templates", e.admin, "", server.CouponTemplateJSON{ID: "tpl-many", Kind: "fixed",
		Amount: 100, PerUserLimit: 5}), http.StatusCreated)
	for _, sc := range lostScenarios() {
		for _, pred := range []struct {
			name  string
			match func(string) bool
		}{{"commit", testenv.IsCommit}, {"write", isWrite}, {"read", isRead}} {
			for n := 1; n <= 6; n++ {
				what := fmt.Sprintf("%s, %s %d lost", sc.name, pred.name, n)
				user := fmt.Sprintf("u-%s-%s-%d", strings.ReplaceAll(sc.name, " ", "-"), pred.name, n)
				tok := token(t, user, false)
				path := sc.prep(t, e, tok)
				caller, body := sc.request(e, tok, user)
				r, lost := e.lost(t, link, testenv.Nth(n, pred.match), sc.method, path, caller, sc.key, body)
				if len(lost) == 0 {
					continue // the request made fewer statements
				}
				e.replayed(t, sc, what, tok, path, caller, body, r, lost)
			}
		}
	}
	e.requireAuditClean(t)
}

// contains matches a statement containing s.
func contains(s string) func(string) bool {
	return func(q string) bool { return strings.Contains(q, s) }
}

// TestAttackRefreshRetriedAfterLostReply: a refresh sent with an Idempotency-Key whose
// rotation committed but whose reply was lost (503, "retry later") is retried with the
// same refresh token and key, as told. The retry must not be taken for a stolen token's
// replay: it gets the answer it lost (the same pair, again on every retry), the session
// lives on, and the rotation's reuse detection still works afterwards.
func TestAttackRefreshRetriedAfterLostReply(t *testing.T) {
	e, link := newLossyEnv(t)
	s := login1(t, e.app, "alice")
	refresh := server.RefreshJSON{RefreshToken: s.RefreshToken}
	r, lost := e.lostAfter(t, link, contains("UPDATE `member_refresh_tokens`"), testenv.IsCommit, "POST", "/v1/sessions/refresh", "", "rot-1", refresh)
	require.Equal(t, []string{"COMMIT"}, lost)
	expectProblem(t, r, http.StatusServiceUnavailable, "dependency_unavailable")
	require.NotEmpty(t, r.Header.Get("Retry-After"))

	r = e.untilFinal(t, "refresh retried", "POST", "/v1/sessions/refresh", "", "rot-1", refresh)
	s2 := as[server.SessionJSON](t, expect(t, r, http.StatusOK))
	assert.Equal(t, s.UserID, s2.UserID)
	again := as[server.SessionJSON](t, expect(t, e.call("POST", "/v1/sessions/refresh", "", "rot-1", refresh), http.StatusOK))
	assert.Equal(t, [2]string{s2.AccessToken, s2.RefreshToken}, [2]string{again.AccessToken, again.RefreshToken}, "the same answer")
	expect(t, e.call("GET", "/v1/orders", s2.AccessToken, "", nil), http.StatusOK)
	expect(t, e.call("GET", "/v1/orders", s.AccessToken, "", nil), http.StatusOK)
	s3 := as[server.SessionJSON](t, expect(t, e.call("POST", "/v1/sessions/refresh", "", "rot-2",
		server.RefreshJSON{RefreshToken: s2.RefreshToken}), http.StatusOK)) // the session lives on

	// The first token, replayed once its successor was used, is a stolen token's replay:
	// the session is revoked, every token of it denied.
	expectProblem(t, e.call("POST", "/v1/sessions/refresh", "", "rot-1", refresh), http.StatusUnauthorized, "refresh_token_reused")
	for _, tok := range []string{s.AccessToken, s2.AccessToken, s3.AccessToken} {
		expectProblem(t, e.call("GET", "/v1/orders", tok, "", nil), http.StatusUnauthorized, "token_revoked")
	}
	expectProblem(t, e.call("POST", "/v1/sessions/refresh", "", "", server.RefreshJSON{RefreshToken: s3.RefreshToken}),
		http.StatusUnauthorized, "invalid_refresh_token")
}

// TestAttackLoginLimitCountsEachAttemptOnce: the failed-login limit (5 per login ID) is
// kept in Redis. When Redis's reply to an attempt's take is lost (the connection drops
// after Redis ran it), the client sends the take again on a fresh connection: the attempt
// must still count once. Five wrong passwords, each meeting that fault, are five 401s, and
// only the sixth attempt is refused with 429.
func TestAttackLoginLimitCountsEachAttemptOnce(t *testing.T) {
	rdb := testenv.OwnRedis(t)
	link := newLossyRedisLink(t, rdb.Addr)
	cfg, sim, setHook := fullConfig(t, testenv.MySQLDSN(t), link.Addr(), 0)
	a := start(t, backend{name: "lossy-redis", config: func(*testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return cfg, sim, setHook
	}}, nil, fastHash)
	expect(t, a.call("POST", "/v1/members", "", "", server.SignUpJSON{LoginID: "bob", Password: "correct horse"}), http.StatusCreated)
	e := &attackEnv{app: a}
	wrong := server.LoginJSON{LoginID: "bob", Password: "wrong horse"}
	take := func(q string) bool {
		return strings.Contains(q, "commercekit:login:id bob") && strings.Contains(q, " take")
	}
	for i := 1; i <= member.DefaultAccountFailures; i++ {
		r, lost := e.lost(t, link, testenv.Nth(1, take), "POST", "/v1/sessions", "", "", wrong)
		require.Len(t, lost, 1, "attempt %d", i)
		expectProblem(t, r, http.StatusUnauthorized, "invalid_credentials")
	}
	expectProblem(t, a.call("POST", "/v1/sessions", "", "", wrong), http.StatusTooManyRequests, "too_many_login_attempts")
}

// newRedisLossyEnv is newAttackEnv with its Redis behind a lossyLink.
func newRedisLossyEnv(t *testing.T) (*attackEnv, *lossyLink) {
	t.Helper()
	rdb := testenv.OwnRedis(t)
	link := newLossyRedisLink(t, rdb.Addr)
	cfg, sim, setHook := fullConfig(t, testenv.MySQLDSN(t), link.Addr(), 0)
	a := start(t, backend{name: "lossy-redis", config: func(*testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return cfg, sim, setHook
	}}, nil, fastHash)
	e := &attackEnv{app: a, rdb: rdb}
	e.admin = setup(t, a, "p1", 9000, 10_000)
	e.alice = signUpAndLogin(t, a, "alice")
	return e, link
}

// runOf matches the n-th to the (n+k-1)-th statements match accepts after arming.
func runOf(n, k int, match func(string) bool) func(string) bool {
	seen := 0
	return func(q string) bool {
		if !match(q) {
			return false
		}
		seen++
		return seen >= n && seen < n+k
	}
}

// isRedisWrite matches a Redis script or a command that writes.
func isRedisWrite(q string) bool {
	cmd, _, _ := strings.Cut(q, " ")
	switch strings.ToUpper(cmd) {
	case "EVALSHA", "EVAL", "EVALSHA_RO", "FCALL", "SET", "DEL", "HSET", "INCR", "INCRBY", "DECRBY", "EXPIRE", "PEXPIRE",
		"SADD", "SREM", "ZADD", "ZREM", "LPUSH", "RPUSH", "MULTI", "EXEC", "HINCRBY", "UNLINK", "GETDEL":
		return true
	}
	return false
}

// TestAttackLostRedisReplies: every write of a user, with the reply of its n-th Redis
// script or write lost once (go-redis sends it again) or twice running (the caller sees the
// failure: 503), reaches exactly one effect: one cart line, one order, one charge, one
// refund, one coupon, the points once; the stock and the audit agree.
func TestAttackLostRedisReplies(t *testing.T) {
	e, link := newRedisLossyEnv(t)
	expect(t, e.call("POST", "/v1/coupon-templates", e.admin, "", server.CouponTemplateJSON{ID: "tpl-many", Kind: "fixed",
		Amount: 100, PerUserLimit: 5}), http.StatusCreated)
	for _, sc := range lostScenarios() {
		for _, kind := range []struct {
			name  string
			match func(string) bool
			runs  []int
		}{{"write", isRedisWrite, []int{1, 2}}, {"command", func(string) bool { return true }, []int{2}}} {
			for _, k := range kind.runs {
				for n := 1; n <= 6; n++ {
					what := fmt.Sprintf("%s, Redis %s %d lost %d times", sc.name, kind.name, n, k)
					user := fmt.Sprintf("r-%s-%s-%d-%d", strings.ReplaceAll(sc.name, " ", "-"), kind.name, k, n)
					tok := token(t, user, false)
					path := sc.prep(t, e, tok)
					caller, body := sc.request(e, tok, user)
					r, lost := e.lost(t, link, runOf(n, k, kind.match), sc.method, path, caller, sc.key, body)
					if len(lost) == 0 {
						continue
					}
					e.replayed(t, sc, what, tok, path, caller, body, r, lost)
				}
			}
		}
	}
	e.requireAuditClean(t)
}

// withOwnKafka points cfg at a Kafka broker of the caller's own (fullConfig's is left
// idle), with topics of the test's own, and returns it.
func withOwnKafka(t *testing.T, cfg *server.Config) *testenv.Kafka {
	t.Helper()
	k := testenv.NewKafka(t)
	cfg.KafkaBrokers, cfg.KafkaTopics = k.Brokers, nil
	for _, typ := range commerce.EventTypes {
		topic, _ := commerce.DefaultTopics().Of(typ)
		cfg.KafkaTopics = append(cfg.KafkaTopics, typ+"="+k.Topic(t, topic+"-own"))
	}
	return k
}

// TestAttackKafkaDown: with Kafka down, orders are still placed, paid and cancelled (Kafka
// is never on a request's path), /readyz says Kafka is down (200 "degraded"), and once it is back the
// collector's counters are exact: every paid order and every cancellation counted once,
// nothing dead-lettered, the audit clean, /readyz ready.
func TestAttackKafkaDown(t *testing.T) {
	rdb := testenv.Redis(t)
	cfg, sim, setHook := fullConfig(t, testenv.MySQLDSN(t), rdb.Options().Addr, rdb.Options().DB)
	k := withOwnKafka(t, &cfg)
	cfg.RollupInterval = 50 * time.Millisecond
	a := start(t, backend{name: "kafka-down", config: func(*testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return cfg, sim, setHook
	}}, nil)
	admin := setup(t, a, "p1", 1000, 50)
	buy := func(i int) server.OrderJSON {
		tok := token(t, fmt.Sprintf("buyer-%d", i), false)
		o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", tok, "o", server.PlaceOrderJSON{
			Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))
		return as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", tok, "pay",
			server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK))
	}
	buy(0)
	buy(1)
	k.Stop(t)
	for i := 2; i < 5; i++ {
		buy(i)
	}
	o := buy(5)
	o = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+o.ID+"/cancel", token(t, "buyer-5", false), "", nil), http.StatusOK))
	require.Equal(t, "CANCELLED", o.Status)
	r := a.call("GET", "/readyz", "", "", nil)
	ready := as[server.Readiness](t, r)
	assert.Equal(t, http.StatusOK, r.Status, "degraded, not pulled from a load balancer: %+v", ready)
	assert.Equal(t, "degraded", ready.Status)
	assert.NotEqual(t, "ok", ready.Checks["kafka"])
	k.Start(t)

	var m server.MetricsJSON
	deadline := time.Now().Add(time.Minute)
	for {
		pm := as[server.ProductMetricsJSON](t, expect(t, a.call("GET", "/v1/products/p1/metrics?period=daily", "", "", nil), http.StatusOK))
		if len(pm.Items) == 1 {
			m = pm.Items[0].MetricsJSON
		}
		if m.Cancellations == 1 && m.Orders == 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	assert.Equal(t, server.MetricsJSON{Orders: 6, Units: 6, Revenue: 6000, Cancellations: 1, UnitsRefunded: 1,
		RevenueRefunded: 1000, NetUnits: 5, NetRevenue: 5000}, m)
	dl := expect(t, a.call("GET", "/v1/admin/outbox/dead-letters", admin, "", nil), http.StatusOK)
	assert.NotContains(t, string(dl.Body), `"id"`, "nothing dead-lettered: %s", dl.Body)
	audit := as[server.AuditJSON](t, expect(t, a.call("GET", "/v1/admin/audit", admin, "", nil), http.StatusOK))
	assert.True(t, audit.OK, "%v", audit.Discrepancies)
	assert.Equal(t, http.StatusOK, a.call("GET", "/readyz", "", "", nil).Status)
}

// TestAttackRedisRestartsEmpty: Redis is killed and started again without its data (its
// snapshot, if any, older than the writes). Nothing it held may change a business answer:
// coupon limits still hold (a user at the per-user limit, a template sold out), replays
// get their first answers, a logged-out token stays revoked, the stock is what SQL says,
// and the audit is clean.
func TestAttackRedisRestartsEmpty(t *testing.T) {
	e := newAttackEnv(t)
	tok := e.alice.AccessToken
	expect(t, e.call("POST", "/v1/coupon-templates", e.admin, "", server.CouponTemplateJSON{ID: "tpl-two", Kind: "fixed",
		Amount: 100, TotalQuantity: 2, PerUserLimit: 1}), http.StatusCreated)
	c1 := expect(t, e.call("POST", "/v1/coupon-templates/tpl-two/issue", tok, "iss-1", nil), http.StatusCreated)
	bob := token(t, "bob", false)
	expect(t, e.call("POST", "/v1/coupon-templates/tpl-two/issue", bob, "iss-1", nil), http.StatusCreated)
	placed := expect(t, e.call("POST", "/v1/orders", tok, "o-1", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 2}}}), http.StatusCreated)
	gone := login1(t, e.app, "alice")
	expect(t, e.call("DELETE", "/v1/sessions", gone.AccessToken, "", nil), http.StatusNoContent)
	before := as[server.StockJSON](t, expect(t, e.call("GET", "/v1/products/p1/stock", "", "", nil), http.StatusOK))

	rc := redis.NewClient(&redis.Options{Addr: e.rdb.Addr})
	t.Cleanup(func() { rc.Close() })
	require.NoError(t, rc.FlushAll(t.Context()).Err()) // whatever a snapshot kept
	e.rdb.Stop(t, 0)
	e.rdb.Start(t)

	// Every answer is a final one or 503 until the server has rebuilt what it needs.
	retry := func(what, method, path, tok, key string, body any) resp {
		return e.untilFinal(t, what, method, path, tok, key, body)
	}
	expectProblem(t, retry("revoked", "GET", "/v1/orders", gone.AccessToken, "", nil), http.StatusUnauthorized, "token_revoked")
	st := as[server.StockJSON](t, expect(t, retry("stock", "GET", "/v1/products/p1/stock", "", "", nil), http.StatusOK))
	assert.Equal(t, before, st)
	r := retry("issue again", "POST", "/v1/coupon-templates/tpl-two/issue", tok, "iss-2", nil)
	assert.Equal(t, http.StatusUnprocessableEntity, r.Status, "alice is at the per-user limit: %s", r.Body)
	r = retry("issue sold out", "POST", "/v1/coupon-templates/tpl-two/issue", token(t, "carol", false), "iss-1", nil)
	assert.Equal(t, http.StatusUnprocessableEntity, r.Status, "the template is sold out: %s", r.Body)
	r = retry("issue replayed", "POST", "/v1/coupon-templates/tpl-two/issue", tok, "iss-1", nil)
	assert.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	assert.Equal(t, as[server.CouponJSON](t, c1).ID, as[server.CouponJSON](t, r).ID)
	r = retry("place replayed", "POST", "/v1/orders", tok, "o-1", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 2}}})
	assert.Equal(t, as[server.OrderJSON](t, placed).ID, as[server.OrderJSON](t, expect(t, r, http.StatusCreated)).ID)
	st = as[server.StockJSON](t, expect(t, e.call("GET", "/v1/products/p1/stock", "", "", nil), http.StatusOK))
	assert.Equal(t, before, st, "the replay reserved nothing more")
	w := as[server.CouponPageJSON](t, expect(t, e.call("GET", "/v1/coupons", tok, "", nil), http.StatusOK))
	assert.Len(t, w.Coupons, 1)
	e.afterFault(t)
}

// TestAttackRedisEmptiedDuringARequest: Redis loses everything (restarted empty) while a
// top-up runs, between its idempotency claim and its answer (at the PG's approval). The
// request did its work and no other request took its key over, so its answer is the
// top-up — not 409 request_in_progress, which a first attempt must never get for work it
// did — and a retry with the key gets the same top-up replayed, charged and credited once.
func TestAttackRedisEmptiedDuringARequest(t *testing.T) {
	rdb := testenv.Redis(t)
	cfg, sim, setHook := fullConfig(t, testenv.MySQLDSN(t), rdb.Options().Addr, rdb.Options().DB)
	h := pgsim.NewHandler(sim)
	var approvals atomic.Int32
	pg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/approve") && approvals.Add(1) == 1 {
			if err := rdb.FlushDB(r.Context()).Err(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(pg.Close)
	cfg.PGSimURL = pg.URL
	a := start(t, backend{name: "redis-emptied", config: func(*testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return cfg, sim, setHook
	}}, nil)
	tok := token(t, "alice", false)
	in := server.TopUpRequestJSON{Amount: 1000, Method: "CARD", Token: "tok_ok"}
	tu := as[server.TopUpJSON](t, expect(t, a.call("POST", "/v1/points/top-ups", tok, "tu", in), http.StatusCreated))
	assert.Equal(t, "COMPLETED", tu.Status)
	r := expect(t, a.call("POST", "/v1/points/top-ups", tok, "tu", in), http.StatusCreated)
	assert.Equal(t, "true", r.Header.Get(server.ReplayedHeader), "the answer was stored")
	assert.Equal(t, tu.ID, as[server.TopUpJSON](t, r).ID)
	assert.Equal(t, 1, sim.Charges(tu.PaymentID), "charged once")
	b := as[server.BalanceJSON](t, expect(t, a.call("GET", "/v1/points", tok, "", nil), http.StatusOK))
	assert.Equal(t, int64(1000), b.Total, "credited once")
	assert.EqualValues(t, 1, approvals.Load())
}

// flowClient is a well-behaved client of the flows test: it sends each request until it
// gets a final answer, retrying 503, 409 request_in_progress, 202 and transport failures
// after their Retry-After, and records every attempt.
type flowClient struct {
	a   *app
	mu  sync.Mutex
	log []attempt
}

func (c *flowClient) call(route, method, path, tok, key string, body any) resp {
	return c.on(c.a, route, method, path, tok, key, body)
}

// on is call sent to the server a (one of several sharing the client's backends).
func (c *flowClient) on(a *app, route, method, path, tok, key string, body any) resp {
	deadline := time.Now().Add(3 * time.Minute)
	for n := 1; ; n++ {
		at := attempt{route: route, n: n, start: time.Now()}
		r, err := a.try(method, path, tok, key, body)
		at.took, at.status, at.retry = time.Since(at.start), r.Status, r.Header.Get("Retry-After")
		if err != nil {
			at.failure = err.Error()
		} else if p, ok := decodeProblem(r.Body); ok && r.Status >= 400 {
			at.code = p.Code
		}
		c.mu.Lock()
		c.log = append(c.log, at)
		c.mu.Unlock()
		again := err != nil || r.Status == http.StatusServiceUnavailable || r.Status == http.StatusAccepted ||
			(r.Status == http.StatusConflict && at.code == "request_in_progress")
		if !again || time.Now().After(deadline) {
			return r
		}
		pause := 500 * time.Millisecond
		if s, err := strconv.Atoi(at.retry); err == nil && s > 0 && s <= 5 {
			pause = time.Duration(s) * time.Second
		}
		time.Sleep(pause)
	}
}

// TestAttackFlowsSurviveRestarts: members sign up, log in, refresh (with a key), fill
// carts, take coupons, buy points, order from the cart, pay, cancel and log out, all at
// once, while MySQL is paused, then killed and started again, and then Redis is paused. Every answer is
// honest (no 5xx but 503, every 503 with Retry-After), every member gets a final answer
// at each step, and the end state is exact: one order each, cancelled and refunded once,
// one coupon each, the points bought once, the stock whole, a logged-out token revoked,
// the audit clean.
func TestAttackFlowsSurviveRestarts(t *testing.T) {
	const members = 24
	e := newAttackEnv(t)
	expect(t, e.call("POST", "/v1/products", e.admin, "", server.NewProductJSON{ID: "p2", Name: "Product p2", Price: 3000, Stock: 500}), http.StatusCreated)
	expect(t, e.call("POST", "/v1/coupon-templates", e.admin, "", server.CouponTemplateJSON{ID: "tpl-w", Kind: "fixed",
		Amount: 100, TotalQuantity: 1000, PerUserLimit: 3}), http.StatusCreated)
	stockOf := func(id string) server.StockJSON {
		return as[server.StockJSON](t, expect(t, e.call("GET", "/v1/products/"+id+"/stock", "", "", nil), http.StatusOK))
	}
	p1, p2 := stockOf("p1"), stockOf("p2")
	c := &flowClient{a: e.app}
	chargesBefore := e.sim.Stats()

	type outcome struct {
		failed string
		userID string
		order  server.OrderJSON
		access string // the access token logged out
	}
	outcomes := make([]outcome, members)
	started := make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	go func() {
		defer close(done)
		testkit.Parallel(members, members, func(i int) {
			o := &outcomes[i]
			fail := func(step string, r resp) { o.failed = fmt.Sprintf("%s: %d %s", step, r.Status, r.Body) }
			login := fmt.Sprintf("flow-%02d", i)
			cred := server.SignUpJSON{LoginID: login, Password: "correct horse"}
			r := c.call("sign-up", "POST", "/v1/members", "", "su", cred) // the key: a retry of an attempt the fault answered 503 after it committed gets the member
			if r.Status != http.StatusCreated {
				fail("sign-up", r)
				return
			}
			if i == members/2 {
				once.Do(func() { close(started) })
			}
			r = c.call("login", "POST", "/v1/sessions", "", "", cred)
			var s server.SessionJSON
			if r.Status != http.StatusCreated || jsonUnmarshal(r.Body, &s) != nil {
				fail("login", r)
				return
			}
			r = c.call("refresh", "POST", "/v1/sessions/refresh", "", "rot-1", server.RefreshJSON{RefreshToken: s.RefreshToken})
			if r.Status != http.StatusOK || jsonUnmarshal(r.Body, &s) != nil {
				fail("refresh", r)
				return
			}
			o.userID = s.UserID
			tok := s.AccessToken
			steps := []struct {
				route, method, path, key string
				body                     any
				want                     int
			}{
				{"cart add", "POST", "/v1/cart/items", "a1", server.LineJSON{ProductID: "p1", Qty: 1}, http.StatusOK},
				{"cart add", "POST", "/v1/cart/items", "a2", server.LineJSON{ProductID: "p2", Qty: 2}, http.StatusOK},
				{"cart set", "PUT", "/v1/cart/items/p2", "", server.CartQtyJSON{Qty: 3}, http.StatusOK},
				{"issue", "POST", "/v1/coupon-templates/tpl-w/issue", "iss", nil, http.StatusCreated},
				{"top-up", "POST", "/v1/points/top-ups", "tu", server.TopUpRequestJSON{Amount: 1000, Method: "CARD", Token: "tok_ok"}, http.StatusCreated},
				{"checkout", "POST", "/v1/orders", "co", server.PlaceOrderJSON{FromCart: true}, http.StatusCreated},
			}
			for _, st := range steps {
				if r = c.call(st.route, st.method, st.path, tok, st.key, st.body); r.Status != st.want {
					fail(st.route, r)
					return
				}
			}
			if jsonUnmarshal(r.Body, &o.order) != nil {
				fail("checkout body", r)
				return
			}
			r = c.call("pay", "POST", "/v1/orders/"+o.order.ID+"/pay", tok, "pay", server.PayJSON{Method: "CARD", Token: "tok_ok"})
			if r.Status != http.StatusOK {
				fail("pay", r)
				return
			}
			r = c.call("cancel", "POST", "/v1/orders/"+o.order.ID+"/cancel", tok, "", nil)
			if r.Status != http.StatusOK || jsonUnmarshal(r.Body, &o.order) != nil {
				fail("cancel", r)
				return
			}
			r = c.call("logout", "DELETE", "/v1/sessions", tok, "", nil)
			if r.Status != http.StatusNoContent { // also when an attempt the fault answered 503 logged out
				fail("logout", r)
				return
			}
			o.access = tok
		})
	}()
	<-started
	e.db.Pause(t) // statements in flight are cut once the MySQL watch finds it not answering
	time.Sleep(3 * time.Second)
	e.db.Unpause(t)
	time.Sleep(time.Second)
	e.db.Stop(t, 0)
	time.Sleep(2 * time.Second)
	e.db.Start(t)
	time.Sleep(time.Second)
	e.rdb.Pause(t)
	time.Sleep(2 * time.Second)
	e.rdb.Unpause(t)
	<-done

	statuses := checkHonestAttempts(t, c.log)
	t.Logf("answers %v", statuses)
	for i, o := range outcomes {
		require.Empty(t, o.failed, "member %d", i)
		assert.Equal(t, "CANCELLED", o.order.Status, "member %d", i)
		expectProblem(t, e.call("GET", "/v1/orders", o.access, "", nil), http.StatusUnauthorized, "token_revoked")
		tok := token(t, o.userID, false)
		orders := as[server.OrderPageJSON](t, expect(t, e.call("GET", "/v1/orders", tok, "", nil), http.StatusOK)).Orders
		require.Len(t, orders, 1, "member %d: one order", i)
		assert.Equal(t, []server.OrderLineJSON{{ProductID: "p1", Qty: 1, UnitPrice: 9000, Amount: 9000},
			{ProductID: "p2", Qty: 3, UnitPrice: 3000, Amount: 9000}}, orders[0].Lines, "member %d", i)
		p := as[server.PaymentJSON](t, expect(t, e.call("GET", "/v1/orders/"+o.order.ID+"/payment", tok, "", nil), http.StatusOK))
		assert.Equal(t, [2]int64{18000, 18000}, [2]int64{p.Amount, p.Refunded}, "member %d: refunded once, in full", i)
		assert.Len(t, as[server.CouponPageJSON](t, expect(t, e.call("GET", "/v1/coupons", tok, "", nil), http.StatusOK)).Coupons, 1, "member %d", i)
		b := as[server.BalanceJSON](t, expect(t, e.call("GET", "/v1/points", tok, "", nil), http.StatusOK))
		assert.Equal(t, int64(1000), b.Total, "member %d: the points bought once", i)
		assert.Empty(t, as[server.CartJSON](t, expect(t, e.call("GET", "/v1/cart", tok, "", nil), http.StatusOK)).Items)
	}
	stats := e.sim.Stats()
	assert.Equal(t, 2*members, stats.Charges-chargesBefore.Charges, "an order and a top-up charged once each")
	assert.Equal(t, members, stats.Cancels-chargesBefore.Cancels, "each order refunded once")
	assert.Equal(t, p1, stockOf("p1"))
	assert.Equal(t, p2, stockOf("p2"))
	e.afterFault(t)
}

// TestAttackEventsLostCommits: the events of paid and cancelled orders flow through the
// outbox relay to Kafka and from Kafka to the collector, both writing MySQL. With the
// reply of the commit of the collector's consumer, or of the relay's publishing, lost
// (each retries: the consumer gets the events again, the relay publishes them again), the
// collector still counts each order and each cancellation once.
func TestAttackEventsLostCommits(t *testing.T) {
	rdb := testenv.OwnRedis(t)
	_, dsn := testenv.OwnMySQL(t)
	mc, err := mysql.ParseDSN(dsn)
	require.NoError(t, err)
	link := newLossyLink(t, mc.Addr)
	mc.Addr = link.Addr()
	cfg, sim, setHook := fullConfig(t, mc.FormatDSN(), rdb.Addr, 0)
	cfg.RollupInterval = 50 * time.Millisecond
	a := start(t, backend{name: "lossy-events", config: func(*testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return cfg, sim, setHook
	}}, nil)
	admin := setup(t, a, "p1", 1000, 50)
	metrics := func() server.MetricsJSON {
		pm := as[server.ProductMetricsJSON](t, expect(t, a.call("GET", "/v1/products/p1/metrics?period=daily", "", "", nil), http.StatusOK))
		if len(pm.Items) == 0 {
			return server.MetricsJSON{}
		}
		return pm.Items[0].MetricsJSON
	}
	waitFor := func(orders, cancels int64) server.MetricsJSON {
		deadline := time.Now().Add(time.Minute)
		for {
			m := metrics()
			if m.Orders >= orders && m.Cancellations >= cancels || time.Now().After(deadline) {
				return m
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	var lost []string
	for i, trigger := range []string{"commerce_metrics_daily", "outbox_events", "outbox_processed", "commerce_metrics_streams", "outbox_streams"} {
		tok := token(t, fmt.Sprintf("buyer-%d", i), false)
		link.armAfter(contains(trigger), testenv.IsCommit)
		o := as[server.OrderJSON](t, expect(t, e2eUntilFinal(t, a, "POST", "/v1/orders", tok, "o", server.PlaceOrderJSON{
			Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))
		expect(t, e2eUntilFinal(t, a, "POST", "/v1/orders/"+o.ID+"/pay", tok, "pay", server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK)
		if i%2 == 1 {
			expect(t, e2eUntilFinal(t, a, "POST", "/v1/orders/"+o.ID+"/cancel", tok, "", nil), http.StatusOK)
		}
		waitFor(int64(i+1), int64((i+1)/2))
		lost = append(lost, link.disarm()...)
	}
	t.Logf("lost the replies of %d commits", len(lost))
	assert.Equal(t, server.MetricsJSON{Orders: 5, Units: 5, Revenue: 5000, Cancellations: 2, UnitsRefunded: 2,
		RevenueRefunded: 2000, NetUnits: 3, NetRevenue: 3000}, waitFor(5, 2))
	audit := as[server.AuditJSON](t, expect(t, a.call("GET", "/v1/admin/audit", admin, "", nil), http.StatusOK))
	assert.True(t, audit.OK, "%v", audit.Discrepancies)
}

// e2eUntilFinal sends a request until its answer is final (see attackEnv.untilFinal).
func e2eUntilFinal(t *testing.T, a *app, method, path, tok, key string, body any) resp {
	t.Helper()
	return (&attackEnv{app: a}).untilFinal(t, method+" "+path, method, path, tok, key, body)
}

// TestAttackRevocationsDuringRedisPause: a logout, a logout of a token without a session,
// and a stolen refresh token's replay, each answered while Redis is paused (503, or their
// answer). Once Redis is back, the replay's revocation is done without any retry (a thief
// does not retry): every token of the session is refused. The logouts, retried as a 503
// tells their clients, end with their tokens refused; none is ever let through after a
// 204.
func TestAttackRevocationsDuringRedisPause(t *testing.T) {
	e := newAttackEnv(t)
	out := login1(t, e.app, "alice")
	tool := token(t, "tool-user", false)
	expect(t, e.call("GET", "/v1/orders", tool, "", nil), http.StatusOK)
	first := login1(t, e.app, "alice")
	second := as[server.SessionJSON](t, expect(t, e.call("POST", "/v1/sessions/refresh", "", "",
		server.RefreshJSON{RefreshToken: first.RefreshToken}), http.StatusOK))

	e.rdb.Pause(t)
	answers := []resp{
		e.call("POST", "/v1/sessions/refresh", "", "", server.RefreshJSON{RefreshToken: first.RefreshToken}), // the replay
		e.call("DELETE", "/v1/sessions", out.AccessToken, "", nil),
		e.call("DELETE", "/v1/sessions", tool, "", nil),
	}
	e.rdb.Unpause(t)
	t.Logf("answers during the pause: %d %d %d", answers[0].Status, answers[1].Status, answers[2].Status)
	for i, r := range answers {
		if r.Status == http.StatusServiceUnavailable {
			assert.NotEmpty(t, r.Header.Get("Retry-After"), "answer %d", i)
			continue
		}
		assert.Contains(t, []int{http.StatusNoContent, http.StatusUnauthorized}, r.Status, "answer %d: %s", i, r.Body)
	}
	for _, tok := range []string{first.AccessToken, second.AccessToken} {
		expectProblem(t, e.untilFinal(t, "revoked", "GET", "/v1/orders", tok, "", nil), http.StatusUnauthorized, "token_revoked")
	}
	for i, tok := range []string{out.AccessToken, tool} {
		if answers[1+i].Status != http.StatusNoContent {
			r := e.untilFinal(t, "logout retried", "DELETE", "/v1/sessions", tok, "", nil)
			assert.Equal(t, http.StatusNoContent, r.Status, "%s", r.Body)
		}
		expectProblem(t, e.untilFinal(t, "logged out", "GET", "/v1/orders", tok, "", nil), http.StatusUnauthorized, "token_revoked")
	}
	expectProblem(t, e.call("POST", "/v1/sessions/refresh", "", "", server.RefreshJSON{RefreshToken: second.RefreshToken}),
		http.StatusUnauthorized, "invalid_refresh_token")
	e.afterFault(t)
}

// TestAttackLostReads: every read route, with the reply of its n-th SELECT lost, answers
// 503 with Retry-After or exactly what it answers without the fault — never a 404, an
// empty list or another wrong answer made of a read that failed.
func TestAttackLostReads(t *testing.T) {
	e, link := newLossyEnv(t)
	tok := e.alice.AccessToken
	expect(t, e.call("POST", "/v1/cart/items", tok, "add", server.LineJSON{ProductID: "p1", Qty: 2}), http.StatusOK)
	o := as[server.OrderJSON](t, expect(t, e.call("POST", "/v1/orders", tok, "o", server.PlaceOrderJSON{
		Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))
	expect(t, e.call("POST", "/v1/orders/"+o.ID+"/pay", tok, "pay", server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK)
	tu := as[server.TopUpJSON](t, expect(t, e.call("POST", "/v1/points/top-ups", tok, "tu",
		server.TopUpRequestJSON{Amount: 1000, Method: "CARD", Token: "tok_ok"}), http.StatusCreated))
	expect(t, e.call("POST", "/v1/coupon-templates/tpl-p1/issue", tok, "iss", nil), http.StatusCreated)
	reads := []struct{ path, tok string }{
		{"/v1/products", ""}, {"/v1/products/p1", ""}, {"/v1/products/p1/stock", ""},
		{"/v1/orders", tok}, {"/v1/orders/" + o.ID, tok}, {"/v1/orders/" + o.ID + "/payment", tok},
		{"/v1/points", tok}, {"/v1/points/history", tok}, {"/v1/points/top-ups/" + tu.ID, tok},
		{"/v1/points/top-ups/" + tu.ID + "/payment", tok}, {"/v1/coupons", tok}, {"/v1/cart", tok},
		{"/v1/rankings", ""}, {"/v1/products/p1/metrics", ""}, {"/v1/admin/outbox/dead-letters", e.admin},
		{"/v1/admin/consumers/" + collector.ConsumerName + "/dead-letters", e.admin},
		{"/v1/admin/consumers", e.admin},
	}
	for _, rd := range reads {
		want := expect(t, e.call("GET", rd.path, rd.tok, "", nil), http.StatusOK)
		for n := 1; n <= 4; n++ {
			r, lost := e.lost(t, link, testenv.Nth(n, isRead), "GET", rd.path, rd.tok, "", nil)
			if len(lost) == 0 {
				continue
			}
			switch {
			case r.Status == http.StatusServiceUnavailable:
				assert.NotEmpty(t, r.Header.Get("Retry-After"), "%s, read %d lost", rd.path, n)
			case r.Status != http.StatusOK || !bytes.Equal(want.Body, r.Body):
				// The stock and rankings change by themselves only through the test's writes,
				// which are over.
				t.Errorf("%s, read %d lost (%q): %d %s, want %s", rd.path, n, lost, r.Status, r.Body, want.Body)
			}
		}
	}
}

// TestAttackCheckoutRetriedAfterLostCartRead: an order from the cart whose read of the
// cart, inside the order's transaction, loses its reply (503: a dependency failed, retry)
// is retried with the same Idempotency-Key, as told. The retry must place the order, not
// answer 422 idempotency_key_reused ("its earlier attempt failed; place the order with a
// new key"): the failure was the database's, not a refusal of the cart, and it must not
// have given the order's stock reservation up for good.
func TestAttackCheckoutRetriedAfterLostCartRead(t *testing.T) {
	e, link := newLossyEnv(t)
	tok := e.alice.AccessToken
	expect(t, e.call("POST", "/v1/cart/items", tok, "add", server.LineJSON{ProductID: "p1", Qty: 2}), http.StatusOK)
	r, lost := e.lostAfter(t, link, contains("INSERT INTO `commerce_cart_checkouts`"), isRead, "POST", "/v1/orders", tok, "co",
		server.PlaceOrderJSON{FromCart: true})
	require.Len(t, lost, 1)
	require.Contains(t, lost[0], "commerce_carts")
	expectProblem(t, r, http.StatusServiceUnavailable, "dependency_unavailable")

	o := as[server.OrderJSON](t, expect(t, e.untilFinal(t, "checkout retried", "POST", "/v1/orders", tok, "co",
		server.PlaceOrderJSON{FromCart: true}), http.StatusCreated))
	assert.Equal(t, []server.OrderLineJSON{{ProductID: "p1", Qty: 2, UnitPrice: 9000, Amount: 18000}}, o.Lines)
	assert.Empty(t, as[server.CartJSON](t, expect(t, e.call("GET", "/v1/cart", tok, "", nil), http.StatusOK)).Items)
	st := as[server.StockJSON](t, expect(t, e.call("GET", "/v1/products/p1/stock", "", "", nil), http.StatusOK))
	assert.Equal(t, [2]int64{998, 2}, [2]int64{st.Available, st.Reserved}, "reserved once")
	audit := as[server.AuditJSON](t, expect(t, e.call("GET", "/v1/admin/audit", e.admin, "", nil), http.StatusOK))
	assert.True(t, audit.OK, "%v", audit.Discrepancies)
}

// sessionProbes are the session routes under lost replies: a refresh with a key, retried,
// gets a pair and the session lives on; a logout, retried, answers 204 (also when its
// first attempt logged out and its answer was a 503: the retry finds the token revoked)
// and ends with the token refused; a login, retried, opens a session.
func sessionProbes(t *testing.T, e *attackEnv, link *lossyLink, kind string, match func(n int) func(string) bool) {
	for n := 1; n <= 6; n++ {
		what := fmt.Sprintf("%s %d lost", kind, n)
		s := login1(t, e.app, "alice")
		refresh := server.RefreshJSON{RefreshToken: s.RefreshToken}
		r, lost := e.lost(t, link, match(n), "POST", "/v1/sessions/refresh", "", "rot", refresh)
		r = e.untilFinal(t, "refresh, "+what, "POST", "/v1/sessions/refresh", "", "rot", refresh)
		s2 := as[server.SessionJSON](t, expect(t, r, http.StatusOK))
		expect(t, e.untilFinal(t, "refreshed token, "+what, "GET", "/v1/orders", s2.AccessToken, "", nil), http.StatusOK)
		expect(t, e.untilFinal(t, "refresh again, "+what, "POST", "/v1/sessions/refresh", "", "rot-2",
			server.RefreshJSON{RefreshToken: s2.RefreshToken}), http.StatusOK)
		t.Logf("refresh, %s: %q", what, lost)

		s = login1(t, e.app, "alice")
		r, lost = e.lost(t, link, match(n), "DELETE", "/v1/sessions", s.AccessToken, "", nil)
		if r.Status != http.StatusNoContent {
			r = e.untilFinal(t, "logout, "+what, "DELETE", "/v1/sessions", s.AccessToken, "", nil)
			assert.Equal(t, http.StatusNoContent, r.Status, "logout, %s: %s", what, r.Body)
		}
		expectProblem(t, e.untilFinal(t, "logged out, "+what, "GET", "/v1/orders", s.AccessToken, "", nil), http.StatusUnauthorized, "token_revoked")
		expectProblem(t, e.untilFinal(t, "refresh after logout, "+what, "POST", "/v1/sessions/refresh", "", "",
			server.RefreshJSON{RefreshToken: s.RefreshToken}), http.StatusUnauthorized, "invalid_refresh_token")
		t.Logf("logout, %s: %q", what, lost)

		r, _ = e.lost(t, link, match(n), "POST", "/v1/sessions", "", "", server.LoginJSON{LoginID: "alice", Password: "correct horse"})
		if r.Status != http.StatusCreated {
			r = e.untilFinal(t, "login, "+what, "POST", "/v1/sessions", "", "", server.LoginJSON{LoginID: "alice", Password: "correct horse"})
		}
		s3 := as[server.SessionJSON](t, expect(t, r, http.StatusCreated))
		expect(t, e.untilFinal(t, "logged in, "+what, "GET", "/v1/orders", s3.AccessToken, "", nil), http.StatusOK)
	}
}

// TestAttackLostSessionReplies: the session routes with the reply of their n-th MySQL
// commit, statement or read lost, and of their n-th Redis command lost once or twice
// running, end as they must once retried as told (see sessionProbes).
func TestAttackLostSessionReplies(t *testing.T) {
	t.Run("mysql", func(t *testing.T) {
		e, link := newLossyEnv(t)
		for _, pred := range []struct {
			name  string
			match func(string) bool
		}{{"commit", testenv.IsCommit}, {"write", isWrite}, {"read", isRead}} {
			sessionProbes(t, e, link, pred.name, func(n int) func(string) bool { return testenv.Nth(n, pred.match) })
		}
	})
	t.Run("redis", func(t *testing.T) {
		e, link := newRedisLossyEnv(t)
		for _, k := range []int{1, 2} {
			sessionProbes(t, e, link, fmt.Sprintf("Redis command (%d running)", k), func(n int) func(string) bool {
				return runOf(n, k, func(string) bool { return true })
			})
		}
	})
}

// lossyPG serves the PG simulator over HTTP and loses, while armed, the responses of the
// requests match accepts: the simulator handles the request (a charge is taken, a refund
// made), then the connection is closed without an answer.
type lossyPG struct {
	h     http.Handler
	mu    sync.Mutex
	match func(r *http.Request) bool
	lost  []string
}

func (l *lossyPG) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	lose := l.match != nil && l.match(r)
	if lose {
		l.lost = append(l.lost, r.Method+" "+r.URL.Path)
	}
	l.mu.Unlock()
	if !lose {
		l.h.ServeHTTP(w, r)
		return
	}
	l.h.ServeHTTP(httptest.NewRecorder(), r)
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		conn.Close()
	}
}

func (l *lossyPG) arm(match func(r *http.Request) bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lost := l.lost
	l.match, l.lost = match, nil
	return lost
}

// TestAttackLostGatewayAnswers: a payment, a top-up and a refund whose gateway call is
// handled but whose answer is lost (once, or every time until disarmed) end, once retried
// as told, exactly once: one charge, one refund, the points once.
func TestAttackLostGatewayAnswers(t *testing.T) {
	rdb := testenv.Redis(t)
	cfg, sim, setHook := fullConfig(t, testenv.MySQLDSN(t), rdb.Options().Addr, rdb.Options().DB)
	lp := &lossyPG{h: pgsim.NewHandler(sim)}
	pg := httptest.NewServer(lp)
	t.Cleanup(pg.Close)
	cfg.PGSimURL = pg.URL
	a := start(t, backend{name: "lossy-pg", config: func(*testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return cfg, sim, setHook
	}}, nil)
	e := &attackEnv{app: a}
	e.admin = setup(t, a, "p1", 9000, 1000)
	for _, times := range []int{1, 3} {
		for _, call := range []string{"/approve", "/v1/cancels/"} {
			what := fmt.Sprintf("%s lost %d times", call, times)
			user := fmt.Sprintf("pg-%d-%s", times, strings.Trim(strings.ReplaceAll(call, "/", "-"), "-"))
			tok := token(t, user, false)
			match := func(r *http.Request) bool { return false }
			rearm := func() {
				seen := 0
				match = func(r *http.Request) bool {
					if !strings.Contains(r.URL.Path, call) {
						return false
					}
					seen++
					return seen <= times
				}
			}
			o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", tok, "o", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))
			if call == "/approve" {
				rearm()
				lp.arm(match)
			}
			r := a.call("POST", "/v1/orders/"+o.ID+"/pay", tok, "pay", server.PayJSON{Method: "CARD", Token: "tok_ok"})
			t.Logf("%s: pay answered %d", what, r.Status)
			if lost := lp.arm(nil); call == "/approve" {
				require.NotEmpty(t, lost, what)
			}
			o = as[server.OrderJSON](t, expect(t, e.untilFinal(t, what, "POST", "/v1/orders/"+o.ID+"/pay", tok, "pay",
				server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK))
			require.Equal(t, "PAID", o.Status, what)
			assert.Equal(t, 1, sim.Charges(o.PaymentID), "%s: charged once", what)

			if call == "/v1/cancels/" {
				rearm()
				lp.arm(match)
			}
			r = a.call("POST", "/v1/orders/"+o.ID+"/cancel", tok, "", nil)
			t.Logf("%s: cancel answered %d", what, r.Status)
			if lost := lp.arm(nil); call == "/v1/cancels/" {
				require.NotEmpty(t, lost, what)
			}
			o = as[server.OrderJSON](t, expect(t, e.untilFinal(t, what, "POST", "/v1/orders/"+o.ID+"/cancel", tok, "", nil), http.StatusOK))
			assert.Equal(t, "CANCELLED", o.Status, what)
			p := as[server.PaymentJSON](t, expect(t, a.call("GET", "/v1/orders/"+o.ID+"/payment", tok, "", nil), http.StatusOK))
			assert.Equal(t, [2]int64{9000, 9000}, [2]int64{p.Amount, p.Refunded}, "%s: refunded once, in full", what)
			assert.Len(t, p.Refunds, 1, what)

			if call == "/approve" {
				rearm()
				lp.arm(match)
			}
			r = a.call("POST", "/v1/points/top-ups", tok, "tu", server.TopUpRequestJSON{Amount: 1000, Method: "CARD", Token: "tok_ok"})
			t.Logf("%s: top-up answered %d", what, r.Status)
			if lost := lp.arm(nil); call == "/approve" {
				require.NotEmpty(t, lost, what)
			}
			r = e.untilFinal(t, what, "POST", "/v1/points/top-ups", tok, "tu", server.TopUpRequestJSON{Amount: 1000, Method: "CARD", Token: "tok_ok"})
			tu := as[server.TopUpJSON](t, r)
			if r.Status == http.StatusCreated {
				assert.Equal(t, "COMPLETED", tu.Status, what)
			}
			var b server.BalanceJSON
			for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
				tu = as[server.TopUpJSON](t, expect(t, a.call("GET", "/v1/points/top-ups/"+tu.ID, tok, "", nil), http.StatusOK))
				if tu.Status != "PAYING" || time.Now().After(deadline) {
					break
				}
			}
			assert.Equal(t, "COMPLETED", tu.Status, what)
			assert.Equal(t, 1, sim.Charges(tu.PaymentID), "%s: charged once", what)
			b = as[server.BalanceJSON](t, expect(t, a.call("GET", "/v1/points", tok, "", nil), http.StatusOK))
			assert.Equal(t, int64(1000), b.Available, "%s: the points once", what)
		}
	}
	audit := as[server.AuditJSON](t, expect(t, a.call("GET", "/v1/admin/audit", e.admin, "", nil), http.StatusOK))
	assert.True(t, audit.OK, "%v", audit.Discrepancies)
}

// TestAttackPayWithPointsRetriedAfterLostReply: an order placed and paid with points alone
// (pay_with_points) whose move to PAYING committed but whose reply was lost (503) is
// retried with the same key, as told. The retry must finish the payment, as a retried pay
// does, and answer the order PAID — not answer 201 with the order left PAYING, an answer
// the key then keeps.
func TestAttackPayWithPointsRetriedAfterLostReply(t *testing.T) {
	e, link := newLossyEnv(t)
	tok := e.alice.AccessToken
	expect(t, e.call("POST", "/v1/points/top-ups", tok, "tu", server.TopUpRequestJSON{Amount: 10000, Method: "CARD", Token: "tok_ok"}), http.StatusCreated)
	in := server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}, Points: 9000, PayWithPoints: true}
	paying := func(q string) bool {
		return strings.Contains(q, "UPDATE `commerce_orders`") && strings.Contains(q, "'PAYING'")
	}
	r, lost := e.lostAfter(t, link, paying, testenv.IsCommit, "POST", "/v1/orders", tok, "pl", in)
	require.Equal(t, []string{"COMMIT"}, lost)
	expectProblem(t, r, http.StatusServiceUnavailable, "dependency_unavailable")

	o := as[server.OrderJSON](t, expect(t, e.untilFinal(t, "place retried", "POST", "/v1/orders", tok, "pl", in), http.StatusCreated))
	assert.Equal(t, "PAID", o.Status)
	o = as[server.OrderJSON](t, expect(t, e.call("POST", "/v1/orders", tok, "pl", in), http.StatusCreated))
	assert.Equal(t, "PAID", o.Status, "the answer the key keeps")
	b := as[server.BalanceJSON](t, expect(t, e.call("GET", "/v1/points", tok, "", nil), http.StatusOK))
	assert.Equal(t, [3]int64{1000, 0, 1000}, [3]int64{b.Available, b.Held, b.Total}, "spent once")
}
