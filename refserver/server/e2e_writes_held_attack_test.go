package server_test

import (
	"database/sql"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/refserver/server"
)

// TestAttackWritesHeldLeaveHeadReads: while MySQL holds writes (a global read lock) and the
// server refuses its writes at once, a HEAD of a read route is a read, answered as its GET
// is: a load balancer's or a monitor's HEAD /readyz (or /healthz) must not see 503 on every
// instance during a backup's lock, and a HEAD of the catalogue writes nothing. The write
// gate took every method but GET for a write, HEAD included (the mux serves HEAD with the
// GET route), and answered HEAD /readyz 503 while GET /readyz said ready.
func TestAttackWritesHeldLeaveHeadReads(t *testing.T) {
	var dsn string
	e := newAttackEnvOn(t, func(tb testing.TB) (*testenv.Own, string) {
		db, d := testenv.OwnMySQL(tb)
		dsn = d
		return db, d
	})
	admin, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close() })
	lock, err := admin.Conn(t.Context())
	require.NoError(t, err)
	_, err = lock.ExecContext(t.Context(), "FLUSH TABLES WITH READ LOCK")
	require.NoError(t, err)
	t.Cleanup(func() { _ = lock.Close() })
	require.Eventually(t, func() bool {
		status, ready := e.readyz(t)
		return status == http.StatusOK && ready.Checks["mysql_writes"] != "ok" && ready.Checks["mysql_writes"] != ""
	}, time.Minute, 100*time.Millisecond, "the watch never found writes held")

	for _, path := range []string{"/readyz", "/healthz", "/v1/products", "/v1/products/p1", "/v1/products/p1/stock"} {
		get := e.call(http.MethodGet, path, "", "", nil)
		require.Equal(t, http.StatusOK, get.Status, "GET %s: %s", path, get.Body)
		head := e.call(http.MethodHead, path, "", "", nil)
		assert.Equal(t, http.StatusOK, head.Status, "HEAD %s while writes are held: %v", path, head.Header)
	}
	head := e.call(http.MethodHead, "/v1/orders/"+e.paid.ID, e.alice.AccessToken, "", nil)
	assert.Equal(t, http.StatusOK, head.Status, "HEAD of an order while writes are held: %v", head.Header)
	place := e.call(http.MethodPost, "/v1/orders", e.alice.AccessToken, "held-place", server.PlaceOrderJSON{
		Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}})
	assert.Equal(t, http.StatusServiceUnavailable, place.Status, "a write is still refused: %s", place.Body)

	_, err = lock.ExecContext(t.Context(), "UNLOCK TABLES")
	require.NoError(t, err)
}
