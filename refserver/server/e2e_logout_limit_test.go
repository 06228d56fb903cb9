package server_test

import (
	"net/http"
	"testing"

	"github.com/commercekit/commercekit/refserver/server"
)

// TestLogoutNotLockedOutByTheWriteLimit: the per-user write limit keyed logout on the
// user too, so whoever holds a stolen access token could keep the user's write bucket
// empty (any write with the token, once a second) and every logout of the user — the
// only way to revoke that token and its session before they expire — was 429
// rate_limited. Logout only takes power away, and each token logs out once (a revoked
// token's logout is 204 without writing), so it is not limited by the write rate: it
// answers 204 and the token is revoked, however empty the user's bucket.
func TestLogoutNotLockedOutByTheWriteLimit(t *testing.T) {
	a := start(t, embedded, func(c *server.Config) { c.RateLimit, c.RateBurst = 0.001, 3 }, fastHash)
	s := signUpAndLogin(t, a, "victim")
	for range 3 { // the thief, with the same access token, spends the user's writes
		expect(t, a.call("DELETE", "/v1/cart/items/p1", s.AccessToken, "", nil), http.StatusOK)
	}
	expectProblem(t, a.call("DELETE", "/v1/cart/items/p1", s.AccessToken, "", nil), http.StatusTooManyRequests, "rate_limited")

	expect(t, a.call("DELETE", "/v1/sessions", s.AccessToken, "", nil), http.StatusNoContent)
	expectProblem(t, a.call("GET", "/v1/points", s.AccessToken, "", nil), http.StatusUnauthorized, "token_revoked")
	expectProblem(t, a.call("POST", "/v1/sessions/refresh", "", "", server.RefreshJSON{RefreshToken: s.RefreshToken}),
		http.StatusUnauthorized, "invalid_refresh_token")
}
