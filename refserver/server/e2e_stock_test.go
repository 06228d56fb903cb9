package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/refserver/server"
)

// TestRedisLossHeals: full mode, Redis loses everything while an order is open and
// another is paid. Stock requests answer 503 dependency_unavailable with Retry-After —
// never 404 nor out_of_stock — until the healer has rebuilt Redis from the journal, by
// itself; then the stock is what it was, the open order can be paid and the paid one
// cancelled.
func TestRedisLossHeals(t *testing.T) {
	var rdb *redis.Client
	a := start(t, full, func(c *server.Config) {
		rdb = redis.NewClient(&redis.Options{Addr: c.RedisAddr, DB: c.RedisDB}) // the test's own database
	})
	t.Cleanup(func() { rdb.Close() })
	setup(t, a, "p1", 9000, 5)
	alice := token(t, "alice", false)
	place := func(key string) server.OrderJSON {
		return as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, key, server.PlaceOrderJSON{
			Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))
	}
	paid, open := place("o1"), place("o2")
	expect(t, a.call("POST", "/v1/orders/"+paid.ID+"/pay", alice, "pay-1", server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK)

	require.NoError(t, rdb.FlushDB(context.Background()).Err())
	r := a.call("GET", "/v1/products/p1/stock", "", "", nil)
	if r.Status != http.StatusOK { // the healer may already be done
		p := expectProblem(t, r, http.StatusServiceUnavailable, "dependency_unavailable")
		assert.Positive(t, p.RetryAfter)
	}
	var st server.StockJSON
	require.Eventually(t, func() bool {
		r := a.call("GET", "/v1/products/p1/stock", "", "", nil)
		if r.Status == http.StatusOK {
			st = as[server.StockJSON](t, r)
			return true
		}
		expectProblem(t, r, http.StatusServiceUnavailable, "dependency_unavailable")
		return false
	}, 30*time.Second, 50*time.Millisecond, "the healer rebuilds Redis by itself")
	assert.Equal(t, []int64{3, 1, 1}, []int64{st.Available, st.Reserved, st.Sold})

	o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+open.ID+"/pay", alice, "pay-2",
		server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK))
	assert.Equal(t, "PAID", o.Status)
	o = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+paid.ID+"/cancel", alice, "", nil), http.StatusOK))
	assert.Equal(t, "CANCELLED", o.Status)
	// The return reaches Redis after the cancel's commit; when that step cannot finish at
	// once (a slow Redis on a loaded machine), recovery completes it.
	assert.Eventually(t, func() bool {
		st = as[server.StockJSON](t, expect(t, a.call("GET", "/v1/products/p1/stock", "", "", nil), http.StatusOK))
		return st.Available == 4 && st.Reserved == 0 && st.Sold == 1
	}, 30*time.Second, 50*time.Millisecond, "the cancelled order's unit returned: %+v", st)
}
