package server_test

import (
	"database/sql"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/server"
)

// TestCouponIssuerSwitch: a deployment that adds Redis to a MySQL one moves its coupon
// templates from the SQL issuer to the Redis one. A server started with Redis claims every
// template at start and issues it; a server still running without Redis (an instance not yet
// replaced in a rolling deploy) refuses to issue it with 503 and Retry-After, for a client
// to retry elsewhere: not a 500, and never a coupon counted by a second issuer. The
// template's total holds across both.
func TestCouponIssuerSwitch(t *testing.T) {
	dsn, rdb := testenv.MySQLDSN(t), testenv.Redis(t)
	sqlOnly := backend{name: "mysql", config: func(t *testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return fullConfig(t, dsn, "", 0)
	}}
	withRedis := backend{name: "mysql-redis", config: func(t *testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return fullConfig(t, dsn, rdb.Options().Addr, rdb.Options().DB)
	}}
	admin := token(t, "admin", true)
	issue := func(a *app, user string) resp {
		return a.call("POST", "/v1/coupon-templates/rush/issue", token(t, user, false), "k-"+user, nil)
	}

	old := start(t, sqlOnly, nil)
	expect(t, old.call("POST", "/v1/coupon-templates", admin, "", server.CouponTemplateJSON{
		ID: "rush", Kind: "fixed", Amount: 100, TotalQuantity: 3, PerUserLimit: 1}), http.StatusCreated)
	expect(t, issue(old, "u1"), http.StatusCreated)

	moved := start(t, withRedis, nil)
	expect(t, issue(moved, "u2"), http.StatusCreated)
	r := issue(old, "u3")
	expectProblem(t, r, http.StatusServiceUnavailable, "coupon_other_issuer")
	assert.NotEmpty(t, r.Header.Get("Retry-After"))
	expect(t, issue(moved, "u3"), http.StatusCreated)
	expectProblem(t, issue(moved, "u4"), http.StatusUnprocessableEntity, "coupon_sold_out")
	expect(t, issue(moved, "u1"), http.StatusCreated) // u1's request, served by the old server: replayed

	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.QueryRow("SELECT COUNT(*) FROM coupon_coupons WHERE template_id = 'rush'").Scan(&n))
	assert.Equal(t, 3, n)
}
