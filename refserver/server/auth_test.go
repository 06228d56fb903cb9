package server

import (
	"crypto/rand"
	"crypto/rsa"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAuthenticate(t *testing.T) {
	secret := []byte("0123456789abcdef0123")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := newAuthenticator(secret, func() time.Time { return now })
	sign := func(m jwt.SigningMethod, key any, c jwt.Claims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		require.NoError(t, err)
		return s
	}
	claims := func(sub string, exp time.Time, role string) Claims {
		c := Claims{Role: role, RegisteredClaims: jwt.RegisteredClaims{Subject: sub}}
		if !exp.IsZero() {
			c.ExpiresAt = jwt.NewNumericDate(exp)
		}
		return c
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	good, err := IssueToken(secret, "user-1", false, time.Hour, now)
	require.NoError(t, err)
	admin, err := IssueToken(secret, "root", true, time.Hour, now)
	require.NoError(t, err)
	hour := now.Add(time.Hour)

	for name, tc := range map[string]struct {
		header string
		want   Principal
		err    error
	}{
		"user":             {header: "Bearer " + good, want: Principal{UserID: "user-1"}},
		"admin":            {header: "bearer " + admin, want: Principal{UserID: "root", Admin: true}},
		"missing":          {header: "", err: errNoToken},
		"not bearer":       {header: "Basic dXNlcjpwdw==", err: errNoToken},
		"garbage":          {header: "Bearer not.a.jwt", err: errBadToken},
		"other secret":     {header: "Bearer " + sign(jwt.SigningMethodHS256, []byte("another-secret-123"), claims("u", hour, "")), err: errBadToken},
		"HS512 refused":    {header: "Bearer " + sign(jwt.SigningMethodHS512, secret, claims("u", hour, "")), err: errBadToken},
		"RS256 refused":    {header: "Bearer " + sign(jwt.SigningMethodRS256, rsaKey, claims("u", hour, "")), err: errBadToken},
		"alg none":         {header: "Bearer " + sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("u", hour, "admin")), err: errBadToken},
		"no exp":           {header: "Bearer " + sign(jwt.SigningMethodHS256, secret, claims("u", time.Time{}, "")), err: errBadToken},
		"expired":          {header: "Bearer " + sign(jwt.SigningMethodHS256, secret, claims("u", now.Add(-time.Minute), "")), err: errTokenExpired},
		"no subject":       {header: "Bearer " + sign(jwt.SigningMethodHS256, secret, claims("", hour, "")), err: errBadToken},
		"subject too long": {header: "Bearer " + sign(jwt.SigningMethodHS256, secret, claims(string(make([]byte, 65)), hour, "")), err: errBadToken},
		// Validly signed, but the subject is no user ID: 401 invalid_token, never a 400 later.
		"subject with a space":   {header: "Bearer " + sign(jwt.SigningMethodHS256, secret, claims("a b", hour, "")), err: errBadToken},
		"subject not ASCII":      {header: "Bearer " + sign(jwt.SigningMethodHS256, secret, claims("josé", hour, "")), err: errBadToken},
		"subject with a control": {header: "Bearer " + sign(jwt.SigningMethodHS256, secret, claims("u\n1", hour, "admin")), err: errBadToken},
	} {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/orders", nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			p, err := a.authenticate(r)
			if tc.err != nil {
				assert.ErrorIs(t, err, tc.err)
				assert.Equal(t, 401, authProblem(err).Status)
				if tc.err == errBadToken {
					assert.Equal(t, "invalid_token", authProblem(err).Code)
				}
				return
			}
			require.NoError(t, err)
			assert.Len(t, p.TokenID, 36, "IssueToken sets a jti")
			assert.True(t, hour.Equal(p.ExpiresAt), "expiry %s", p.ExpiresAt)
			p.TokenID, p.ExpiresAt = "", time.Time{}
			assert.Equal(t, tc.want, p)
		})
	}
}
