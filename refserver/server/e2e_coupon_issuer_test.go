package server_test

import (
	"database/sql"
	"net/http"
	"testing"
	"time"

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

// TestCouponIssuerSwitchWhileRedisDown: a server started with Redis while its Redis is
// down starts all the same, as it does for its stock (the healer keeps trying), answering
// 503 with Retry-After meanwhile; it cannot claim the SQL issuer's templates for
// rediscoupon then (the claim rebuilds the template's Redis state), and claims them once
// Redis answers. Failing the start instead turns a Redis outage during a rolling deploy
// that adds Redis into instances that cannot start at all. Until the claim the SQL server
// keeps issuing the template; after it, only the Redis one does, and the total holds.
func TestCouponIssuerSwitchWhileRedisDown(t *testing.T) {
	dsn, rdb := testenv.MySQLDSN(t), testenv.OwnRedis(t)
	sqlOnly := backend{name: "mysql", config: func(t *testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return fullConfig(t, dsn, "", 0)
	}}
	withRedis := backend{name: "mysql-redis", config: func(t *testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		return fullConfig(t, dsn, rdb.Addr, 0)
	}}
	admin := token(t, "admin", true)
	issue := func(a *app, user string) resp {
		return a.call("POST", "/v1/coupon-templates/rush/issue", token(t, user, false), "k-"+user, nil)
	}

	old := start(t, sqlOnly, nil)
	expect(t, old.call("POST", "/v1/coupon-templates", admin, "", server.CouponTemplateJSON{
		ID: "rush", Kind: "fixed", Amount: 100, TotalQuantity: 3, PerUserLimit: 1}), http.StatusCreated)
	expect(t, issue(old, "u1"), http.StatusCreated)

	rdb.Stop(t, 0)
	moved := start(t, withRedis, nil)
	r := issue(moved, "u2")
	assert.Equal(t, http.StatusServiceUnavailable, r.Status, "%s", r.Body)
	assert.NotEmpty(t, r.Header.Get("Retry-After"))
	expect(t, issue(old, "u2"), http.StatusCreated) // still the SQL issuer's template

	rdb.Start(t)
	require.Eventually(t, func() bool { return issue(moved, "u3").Status == http.StatusCreated },
		time.Minute, 100*time.Millisecond, "the Redis server claims the template once Redis answers")
	expectProblem(t, issue(old, "u4"), http.StatusServiceUnavailable, "coupon_other_issuer")
	expectProblem(t, issue(moved, "u4"), http.StatusUnprocessableEntity, "coupon_sold_out")

	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	defer db.Close()
	var users []string
	rows, err := db.Query("SELECT user_id FROM coupon_coupons WHERE template_id = 'rush' ORDER BY user_id")
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var u string
		require.NoError(t, rows.Scan(&u))
		users = append(users, u)
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, []string{"u1", "u2", "u3"}, users)
}
