package server_test

import (
	"net/http"
	"testing"

	"github.com/commercekit/commercekit/refserver/server"
)

// TestTokenKindsNotInterchangeable (coverage): a refresh token is no bearer token and an
// access token no refresh token. Each presented as the other is refused as unknown, and
// the refusal changes nothing: the session is neither revoked (the revocation of RFC 7009
// refuses an access token, longer than any refresh token, as no token it issued) nor
// counted as a refresh token's reuse, so both of its tokens still work.
func TestTokenKindsNotInterchangeable(t *testing.T) {
	a := start(t, embedded, nil, fastHash)
	s := signUpAndLogin(t, a, "alice")

	for _, route := range []struct{ method, path string }{{"GET", "/v1/cart"}, {"DELETE", "/v1/sessions"}} {
		expectProblem(t, a.call(route.method, route.path, s.RefreshToken, "", nil), http.StatusUnauthorized, "invalid_token")
	}
	expectProblem(t, a.call("POST", "/v1/sessions/refresh", "", "", server.RefreshJSON{RefreshToken: s.AccessToken}),
		http.StatusUnauthorized, "invalid_refresh_token")
	expectProblem(t, a.call("POST", "/v1/sessions/revoke", "", "", server.RefreshJSON{RefreshToken: s.AccessToken}),
		http.StatusBadRequest, "invalid_request")

	expect(t, a.call("GET", "/v1/cart", s.AccessToken, "", nil), http.StatusOK)
	next := as[server.SessionJSON](t, expect(t, a.call("POST", "/v1/sessions/refresh", "", "",
		server.RefreshJSON{RefreshToken: s.RefreshToken}), http.StatusOK))
	expect(t, a.call("GET", "/v1/cart", next.AccessToken, "", nil), http.StatusOK)
}
