package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/server"
)

func TestIdempotentReplays(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, nil)
			setup(t, a, "p1", 9000, 10)
			alice, bob := token(t, "alice", false), token(t, "bob", false)
			body := server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}

			// Same key, same request: the stored response, byte for byte, marked as a replay;
			// the same JSON written differently is the same request.
			first := expect(t, a.call("POST", "/v1/orders", alice, "K", body), http.StatusCreated)
			assert.Empty(t, first.Header.Get(server.ReplayedHeader))
			require.Equal(t, "/v1/orders/"+as[server.OrderJSON](t, first).ID, first.Header.Get("Location"))
			for _, again := range []any{body, `{ "lines" : [ {"qty": 1, "product_id": "p1"} ] }`} {
				r := expect(t, a.call("POST", "/v1/orders", alice, "K", again), http.StatusCreated)
				assert.Equal(t, "true", r.Header.Get(server.ReplayedHeader))
				assert.Equal(t, string(first.Body), string(r.Body))
				assert.Equal(t, first.Header.Get("Location"), r.Header.Get("Location"), "a replayed 201 keeps its Location")
			}
			// Same key, another request: 422, nothing placed.
			expectProblem(t, a.call("POST", "/v1/orders", alice, "K", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 2}}}), http.StatusUnprocessableEntity, "idempotency_key_reused")
			// Keys are per user.
			other := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", bob, "K", body), http.StatusCreated))
			o := as[server.OrderJSON](t, first)
			assert.NotEqual(t, o.ID, other.ID)
			assert.Equal(t, int64(2), as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil)).Reserved)

			// Pay: replayed, and refused with another body.
			pay := server.PayJSON{Method: "CARD", Token: "tok_1"}
			paid := expect(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "P", pay), http.StatusOK)
			r := expect(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "P", pay), http.StatusOK)
			assert.Equal(t, "true", r.Header.Get(server.ReplayedHeader))
			assert.Equal(t, string(paid.Body), string(r.Body))
			expectProblem(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "P", server.PayJSON{Method: "CARD", Token: "tok_2"}),
				http.StatusUnprocessableEntity, "idempotency_key_reused")

			// Concurrent: while the first request is with the PG (which hangs until the
			// attempt timeout, then approves the retry), the same key gets 409.
			o2 := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "K2", body), http.StatusCreated))
			payID := "pay-" + o2.ID
			a.sim.InjectFault(payID, pgsim.FaultTimeout, 1)
			done := make(chan resp, 1)
			go func() {
				r, err := a.try("POST", "/v1/orders/"+o2.ID+"/pay", alice, "P2", pay)
				if err != nil {
					r = resp{Body: []byte(err.Error())}
				}
				done <- r
			}()
			require.Eventually(t, func() bool { return a.sim.ApproveCalls(payID) > 0 }, 30*time.Second, 20*time.Millisecond, "the first payment to reach the PG")
			p := expectProblem(t, a.call("POST", "/v1/orders/"+o2.ID+"/pay", alice, "P2", pay), http.StatusConflict, "request_in_progress")
			assert.Positive(t, p.RetryAfter)
			firstPay := expect(t, <-done, http.StatusOK)
			assert.Equal(t, "PAID", as[server.OrderJSON](t, firstPay).Status)
			r = expect(t, a.call("POST", "/v1/orders/"+o2.ID+"/pay", alice, "P2", pay), http.StatusOK)
			assert.Equal(t, string(firstPay.Body), string(r.Body))
			assert.Equal(t, 1, a.sim.Charges(payID), "charged once")
		})
	}
}

// TestIdempotencyKeyChecks: a missing key, and a key too long (by bytes or characters) or
// not UTF-8, get one answer on every route that takes a key;
// a replayed top-up keeps its Location.
func TestIdempotencyKeyChecks(t *testing.T) {
	a := start(t, embedded, nil)
	setup(t, a, "p1", 9000, 10)
	alice := token(t, "alice", false)
	order := server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}
	topUp := server.TopUpRequestJSON{Amount: 5000, Method: "CARD", Token: "tok_1"}
	for _, route := range []struct {
		path string
		body any
	}{{"/v1/orders", order}, {"/v1/orders", server.PlaceOrderJSON{FromCart: true}}, {"/v1/points/top-ups", topUp},
		{"/v1/coupon-templates/tpl-p1/issue", nil}, {"/v1/cart/items", server.LineJSON{ProductID: "p1", Qty: 1}}} {
		expectProblem(t, a.call("POST", route.path, alice, "", route.body), http.StatusBadRequest, "idempotency_key_missing")
		for _, key := range []string{strings.Repeat("k", 256), strings.Repeat("가", 86), "\xff\xfe"} {
			p := expectProblem(t, a.call("POST", route.path, alice, key, route.body), http.StatusBadRequest, "invalid_idempotency_key")
			assert.Equal(t, server.IdempotencyKeyHeader, p.Field)
		}
		r := a.call("POST", route.path, alice, strings.Repeat("k", 255), route.body)
		assert.NotEqual(t, http.StatusBadRequest, r.Status, "a key of 255 bytes is good: %s", r.Body)
	}
	assert.Equal(t, int64(1), as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil)).Reserved,
		"only the order with a good key was placed")

	first := expect(t, a.call("POST", "/v1/points/top-ups", alice, "top", topUp), http.StatusCreated)
	again := expect(t, a.call("POST", "/v1/points/top-ups", alice, "top", topUp), http.StatusCreated)
	assert.Equal(t, "true", again.Header.Get(server.ReplayedHeader))
	assert.Equal(t, "/v1/points/top-ups/"+as[server.TopUpJSON](t, first).ID, again.Header.Get("Location"))
}

// TestIdempotencyKeyOfTheADR: the source documents' header name, idempotency_key, is the
// same key as Idempotency-Key: a retry under either name replays the first answer, and a
// request carrying two different keys is refused before anything runs.
func TestIdempotencyKeyOfTheADR(t *testing.T) {
	a := start(t, embedded, nil)
	setup(t, a, "p1", 9000, 10)
	alice := token(t, "alice", false)
	body := server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}
	send := func(headers http.Header) resp {
		r, err := a.send("POST", "/v1/orders", alice, headers, body)
		require.NoError(t, err)
		return r
	}
	first := expect(t, send(http.Header{"idempotency_key": {"order-1"}}), http.StatusCreated)
	again := expect(t, send(http.Header{server.IdempotencyKeyHeader: {"order-1"}}), http.StatusCreated)
	assert.Equal(t, "true", again.Header.Get(server.ReplayedHeader))
	assert.Equal(t, string(first.Body), string(again.Body))
	expect(t, send(http.Header{"idempotency_key": {"order-1"}, server.IdempotencyKeyHeader: {"order-1"}}), http.StatusCreated)

	for _, headers := range []http.Header{
		{"idempotency_key": {"order-2"}, server.IdempotencyKeyHeader: {"order-3"}},
		{server.IdempotencyKeyHeader: {"order-2", "order-3"}},
	} {
		p := expectProblem(t, send(headers), http.StatusBadRequest, "invalid_idempotency_key")
		assert.Equal(t, server.IdempotencyKeyHeader, p.Field)
	}
	assert.Equal(t, int64(1), as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil)).Reserved,
		"one order placed")
}

// TestFlashSale: 2,000 buyers race for 100 units over HTTP on MySQL + Redis + Kafka + the
// PG over HTTP. Exactly 100 orders are placed and paid, every other buyer is told the
// product is sold out, and the store's invariants hold.
func TestFlashSale(t *testing.T) {
	const buyers, units, clients = 2000, 100, 64
	a := start(t, full, nil)
	admin := setup(t, a, "hot", 50_000, units)

	var placed, paid, soldOut atomic.Int64
	var failures sync.Map
	testkit.Parallel(buyers, clients, func(i int) {
		user := fmt.Sprintf("buyer-%04d", i)
		tok, err := server.IssueToken(testSecret, user, false, time.Hour, time.Now())
		if err != nil {
			failures.Store(user, err.Error())
			return
		}
		r, err := a.try("POST", "/v1/orders", tok, "order", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "hot", Qty: 1}}})
		switch {
		case err != nil:
			failures.Store(user, err.Error())
			return
		case r.Status == http.StatusUnprocessableEntity:
			soldOut.Add(1)
			return
		case r.Status != http.StatusCreated:
			failures.Store(user, fmt.Sprintf("place: %d %s", r.Status, r.Body))
			return
		}
		placed.Add(1)
		var o server.OrderJSON
		if err := jsonUnmarshal(r.Body, &o); err != nil {
			failures.Store(user, err.Error())
			return
		}
		r, err = a.try("POST", "/v1/orders/"+o.ID+"/pay", tok, "pay", server.PayJSON{Method: "CARD", Token: "tok_" + user})
		if err != nil || r.Status != http.StatusOK {
			failures.Store(user, fmt.Sprintf("pay: %v %d %s", err, r.Status, r.Body))
			return
		}
		if err := jsonUnmarshal(r.Body, &o); err == nil && o.Status == "PAID" {
			paid.Add(1)
		}
	})

	failures.Range(func(k, v any) bool {
		t.Errorf("%v: %v", k, v)
		return true
	})
	assert.Equal(t, int64(units), placed.Load())
	assert.Equal(t, int64(units), paid.Load())
	assert.Equal(t, int64(buyers-units), soldOut.Load())
	st := as[server.StockJSON](t, a.call("GET", "/v1/products/hot/stock", "", "", nil))
	assert.Equal(t, []int64{0, 0, units}, []int64{st.Available, st.Reserved, st.Sold})
	assert.Equal(t, units, a.sim.Stats().Charges)
	audit := as[server.AuditJSON](t, expect(t, a.call("GET", "/v1/admin/audit", admin, "", nil), http.StatusOK))
	require.True(t, audit.OK, "%v", audit.Discrepancies)
	assert.Equal(t, units, audit.Orders)
}

// TestFinalAnswersKeepTheKey: a final 4xx is stored and replayed like a 2xx, so its key
// stays bound to its request. Paying a cancelled order with K1 is 409; the same request
// again gets that 409 replayed; K1 used to pay another order is 422 idempotency_key_reused
// and pays nothing (it used to free the key and pay: 200).
func TestFinalAnswersKeepTheKey(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, nil)
			setup(t, a, "p1", 9000, 10)
			alice := token(t, "alice", false)
			body := server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}
			cancelled := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "o1", body), http.StatusCreated))
			expect(t, a.call("POST", "/v1/orders/"+cancelled.ID+"/cancel", alice, "", nil), http.StatusOK)
			other := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "o2", body), http.StatusCreated))

			pay := server.PayJSON{Method: "CARD", Token: "tok_1"}
			first := a.call("POST", "/v1/orders/"+cancelled.ID+"/pay", alice, "K1", pay)
			expectProblem(t, first, http.StatusConflict, "invalid_order_state")
			again := a.call("POST", "/v1/orders/"+cancelled.ID+"/pay", alice, "K1", pay)
			expectProblem(t, again, http.StatusConflict, "invalid_order_state")
			assert.Equal(t, "true", again.Header.Get(server.ReplayedHeader), "the 409 is replayed")
			assert.Equal(t, string(first.Body), string(again.Body))

			expectProblem(t, a.call("POST", "/v1/orders/"+other.ID+"/pay", alice, "K1", pay),
				http.StatusUnprocessableEntity, "idempotency_key_reused")
			o := as[server.OrderJSON](t, expect(t, a.call("GET", "/v1/orders/"+other.ID, alice, "", nil), http.StatusOK))
			assert.Equal(t, "PENDING_PAYMENT", o.Status, "the reused key paid nothing")
			assert.Zero(t, a.sim.Stats().Charges)

			// A new key pays it.
			o = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+other.ID+"/pay", alice, "K2", pay), http.StatusOK))
			assert.Equal(t, "PAID", o.Status)
		})
	}
}

// TestBadPathIDs: a malformed ID in the path is 400, as the OpenAPI document says, not 404.
func TestBadPathIDs(t *testing.T) {
	a := start(t, embedded, nil)
	setup(t, a, "p1", 9000, 10)
	alice := token(t, "alice", false)
	bad := strings.Repeat("x", 300)
	for _, path := range []string{"/v1/products/" + bad, "/v1/products/" + bad + "/stock", "/v1/orders/" + bad,
		"/v1/points/top-ups/" + bad, "/v1/products/" + bad + "/metrics"} {
		r := a.call("GET", path, alice, "", nil)
		assert.Equal(t, http.StatusBadRequest, r.Status, "%s: %s", path, r.Body)
	}
	r := a.call("POST", "/v1/coupon-templates/"+bad+"/issue", alice, "k", nil)
	assert.Equal(t, http.StatusBadRequest, r.Status, "%s", r.Body)
	r = a.call("POST", "/v1/orders/"+bad+"/pay", alice, "k", server.PayJSON{Method: "CARD", Token: "tok_1"})
	assert.Equal(t, http.StatusBadRequest, r.Status, "%s", r.Body)
}
