package server_test

import (
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/refserver/server"
)

// TestRefusedRequestsKeepTheStockCache: every request that was not a GET dropped the
// cached stock answers when it finished, refused or not, so anyone — without a token —
// defeated the cache of the hottest read at will: a POST /v1/sessions with "{}" (400), a
// refresh with a made-up token (401), a write over the rate (429), each made the next
// stock read of every product go to the backend. A refused request (4xx) changes
// nothing, so it keeps the copies; a write still drops them. The server's clock stands
// still, so no copy expires during the test: the backend reads are counted
// (commercekit_operations_total of the inventory's "stocks").
func TestRefusedRequestsKeepTheStockCache(t *testing.T) {
	now := time.Now()
	a := start(t, embedded, func(c *server.Config) {
		c.StockCacheTTL = time.Minute
		c.RateLimit, c.RateBurst = 0.001, 3
	}, server.WithClock(func() time.Time { return now }))
	admin := setup(t, a, "p1", 100, 10)
	eve := token(t, "eve", false)
	for range 3 { // eve spends her writes, before the copy is made
		expect(t, a.call("DELETE", "/v1/cart/items/p9", eve, "", nil), http.StatusOK)
	}
	stockReads := regexp.MustCompile(`(?m)^commercekit_operations_total\{component="inventory",op="stocks",result="ok"\} (\d+)$`)
	reads := func() int {
		t.Helper()
		m := stockReads.FindSubmatch(expect(t, a.call("GET", "/metrics", admin, "", nil), http.StatusOK).Body)
		require.NotNil(t, m, "no stock reads counted")
		n, err := strconv.Atoi(string(m[1]))
		require.NoError(t, err)
		return n
	}
	available := func() int64 {
		t.Helper()
		return as[server.StockJSON](t, expect(t, a.call("GET", "/v1/products/p1/stock", "", "", nil), http.StatusOK)).Available
	}
	require.Equal(t, int64(10), available())
	base := reads()
	require.Equal(t, int64(10), available())
	require.Equal(t, base, reads(), "the copy answers")

	expectProblem(t, a.call("POST", "/v1/sessions", "", "", "{}"), http.StatusBadRequest, "invalid_request")
	expectProblem(t, a.call("POST", "/v1/sessions/refresh", "", "", server.RefreshJSON{RefreshToken: "made-up"}),
		http.StatusUnauthorized, "invalid_refresh_token")
	expectProblem(t, a.call("POST", "/v1/orders", token(t, "mallory", false), "", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}),
		http.StatusBadRequest, "idempotency_key_missing")
	expectProblem(t, a.call("DELETE", "/v1/cart/items/p9", eve, "", nil), http.StatusTooManyRequests, "rate_limited")
	require.Equal(t, int64(10), available())
	require.Equal(t, base, reads(), "refused requests changed nothing and dropped no copy")

	expect(t, a.call("PUT", "/v1/products/p1/stock", admin, "", server.SetStockJSON{OnHand: 7}), http.StatusOK)
	require.Equal(t, int64(7), available(), "a write drops the copies: read-your-writes")
	require.Equal(t, base+1, reads())
}
