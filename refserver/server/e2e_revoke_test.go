package server_test

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commercekit/commercekit/refserver/member"
	"github.com/commercekit/commercekit/refserver/server"
)

// TestRevokeWithTheRefreshTokenAlone: a client whose access token has expired cannot log
// out with it (401 token_expired), but ends its session with its refresh token (POST
// /v1/sessions/revoke, RFC 7009): 204, after which the refresh token is dead, while another
// session of the same member still refreshes. An unknown token is 204 too (the answer tells
// nothing of the token); a request without one is 400.
func TestRevokeWithTheRefreshTokenAlone(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			var at atomic.Int64
			at.Store(time.Now().UnixNano())
			a := start(t, b, nil, fastHash, server.WithClock(func() time.Time { return time.Unix(0, at.Load()) }))
			s := signUpAndLogin(t, a, "alice")
			other := login1(t, a, "alice")
			at.Add(int64(member.DefaultAccessTTL + time.Minute))

			expectProblem(t, a.call("DELETE", "/v1/sessions", s.AccessToken, "", nil), http.StatusUnauthorized, "token_expired")
			expect(t, a.call("POST", "/v1/sessions/revoke", "", "", server.RefreshJSON{RefreshToken: s.RefreshToken}), http.StatusNoContent)
			expectProblem(t, a.call("POST", "/v1/sessions/refresh", "", "", server.RefreshJSON{RefreshToken: s.RefreshToken}),
				http.StatusUnauthorized, "invalid_refresh_token")
			expect(t, a.call("POST", "/v1/sessions/revoke", "", "", server.RefreshJSON{RefreshToken: s.RefreshToken}), http.StatusNoContent)
			expect(t, a.call("POST", "/v1/sessions/revoke", "", "", server.RefreshJSON{RefreshToken: "no-such-token"}), http.StatusNoContent)
			expectProblem(t, a.call("POST", "/v1/sessions/revoke", "", "", server.RefreshJSON{}), http.StatusBadRequest, "invalid_request")

			renewed := as[server.SessionJSON](t, expect(t, a.call("POST", "/v1/sessions/refresh", "", "",
				server.RefreshJSON{RefreshToken: other.RefreshToken}), http.StatusOK))
			expect(t, a.call("GET", "/v1/orders", renewed.AccessToken, "", nil), http.StatusOK)
		})
	}
}
