package server_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// TestTokenTimesOutOfRange: a signed token's iat, nbf and exp are read as float seconds and
// converted to int64, which for a value beyond int64 (1e300) gives a time in the far past:
// a token "not valid before" or "issued at" a time no clock reaches was accepted as if both
// were long past. An exp beyond what the denylist records (its microseconds overflow int64)
// was accepted too, and its logout recorded with an expiry the purge takes for past. Every
// such token is 401 invalid_token, on every route, logout included; a token of ordinary
// times still works.
func TestTokenTimesOutOfRange(t *testing.T) {
	a := start(t, embedded, nil)
	now := time.Now().Unix()
	sign := func(claims jwt.MapClaims) string {
		claims["sub"], claims["jti"] = "eve", "j-"+time.Now().Format(time.RFC3339Nano)
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(testSecret)
		require.NoError(t, err)
		return tok
	}
	for name, claims := range map[string]jwt.MapClaims{
		"iat beyond int64":        {"exp": now + 600, "iat": 1e300},
		"nbf beyond int64":        {"exp": now + 600, "nbf": 1e300},
		"exp beyond int64":        {"exp": 1e300},
		"exp in year 285 million": {"exp": 9e15},
	} {
		tok := sign(claims)
		for _, c := range []struct{ method, path string }{{"GET", "/v1/points"}, {"GET", "/v1/cart"}, {"DELETE", "/v1/sessions"}} {
			r := a.call(c.method, c.path, tok, "", nil)
			require.Equal(t, http.StatusUnauthorized, r.Status, "%s: %s %s: %s", name, c.method, c.path, r.Body)
		}
	}
	tok := sign(jwt.MapClaims{"exp": now + 600, "iat": now, "nbf": now})
	expect(t, a.call("GET", "/v1/points", tok, "", nil), http.StatusOK)
}
