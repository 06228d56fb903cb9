package server_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/refserver/server"
)

// jtiOf returns the jti of a signed token (its signature unchecked).
func jtiOf(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	require.Len(t, parts, 3)
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var c struct {
		ID string `json:"jti"`
	}
	require.NoError(t, json.Unmarshal(payload, &c))
	require.NotEmpty(t, c.ID)
	return c.ID
}

// loggedOut checks the end state of a logout of s: its token is refused on every other
// route (a write too) as revoked, and its refresh token is dead.
func loggedOut(t *testing.T, a *app, s server.SessionJSON) {
	t.Helper()
	expectProblem(t, a.call("GET", "/v1/orders", s.AccessToken, "", nil), http.StatusUnauthorized, "token_revoked")
	expectProblem(t, a.call("DELETE", "/v1/cart/items/p1", s.AccessToken, "", nil), http.StatusUnauthorized, "token_revoked")
	expectProblem(t, a.call("POST", "/v1/sessions/refresh", "", "", server.RefreshJSON{RefreshToken: s.RefreshToken}),
		http.StatusUnauthorized, "invalid_refresh_token")
}

// TestLogoutRetried: a logout is idempotent. A client that sends it again — its 204 lost on
// the way back, or its answer a 503 although its writes were done (the reply of the
// denial's write into Redis lost) — gets 204 again with the same token, and the retry
// writes nothing (it does not even take a write token); the token stays refused as
// revoked on every other route. A forged, expired or malformed token is still 401.
func TestLogoutRetried(t *testing.T) {
	for _, b := range backends {
		t.Run("answer lost, "+b.name, func(t *testing.T) {
			a := start(t, b, nil, fastHash)
			s := signUpAndLogin(t, a, "alice")
			expect(t, a.call("DELETE", "/v1/sessions", s.AccessToken, "", nil), http.StatusNoContent) // its answer lost
			asked, unanswered, local := server.WriteLimitStats(a.srv)
			expect(t, a.call("DELETE", "/v1/sessions", s.AccessToken, "", nil), http.StatusNoContent)
			expect(t, a.call("DELETE", "/v1/sessions", s.AccessToken, "", nil), http.StatusNoContent)
			asked2, unanswered2, local2 := server.WriteLimitStats(a.srv)
			assert.Equal(t, [3]int64{asked, unanswered, local}, [3]int64{asked2, unanswered2, local2}, "the retries took no write token")
			loggedOut(t, a, s)

			other := []byte("another secret, not the server's, 32+ bytes long")
			forged := testkit.Must(server.IssueToken(other, "alice", false, time.Hour, time.Now()))(t)
			expectProblem(t, a.call("DELETE", "/v1/sessions", forged, "", nil), http.StatusUnauthorized, "invalid_token")
			expired := testkit.Must(server.IssueToken(testSecret, "alice", false, time.Minute, time.Now().Add(-time.Hour)))(t)
			expectProblem(t, a.call("DELETE", "/v1/sessions", expired, "", nil), http.StatusUnauthorized, "token_expired")
			expectProblem(t, a.call("DELETE", "/v1/sessions", "not-a-token", "", nil), http.StatusUnauthorized, "invalid_token")
		})
	}
	t.Run("denial's reply lost", func(t *testing.T) {
		e, link := newRedisLossyEnv(t)
		s := login1(t, e.app, "alice")
		jti := jtiOf(t, s.AccessToken)
		// Every reply to the SET of the token's denial is lost, resends too: the denial is in
		// SQL and in Redis, and the logout answers 503.
		denial := func(q string) bool {
			return strings.HasPrefix(strings.ToLower(q), "set ") && strings.Contains(q, jti)
		}
		r, lost := e.lost(t, link, denial, "DELETE", "/v1/sessions", s.AccessToken, "", nil)
		expectProblem(t, r, http.StatusServiceUnavailable, "dependency_unavailable")
		require.NotEmpty(t, lost)
		assert.NotEmpty(t, r.Header.Get("Retry-After"))
		// The client retries as told: the token is revoked, the logout is done.
		expect(t, e.call("DELETE", "/v1/sessions", s.AccessToken, "", nil), http.StatusNoContent)
		loggedOut(t, e.app, s)
	})
}
