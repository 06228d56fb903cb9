package server_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/refserver/member"
	"github.com/commercekit/commercekit/refserver/server"
)

// loginFrom logs in through the server's handler as a client at remote (host:port) would,
// with extra headers.
func loginFrom(t *testing.T, a *app, remote, login string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("POST", "/v1/sessions", strings.NewReader(`{"login_id":"`+login+`","password":"guess-guess"}`))
	r.RemoteAddr = remote
	r.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	a.srv.Handler().ServeHTTP(w, r)
	return w
}

// TestLoginLimitPerAddress: the per-address limit counts an IPv6 client by its /64 (one
// subscriber's network: varying the low 64 bits is no new address) and never trusts
// forwarding headers.
func TestLoginLimitPerAddress(t *testing.T) {
	a := start(t, embedded, nil, fastHash, server.WithMemberOptions(member.WithLoginLimits(100, 3, time.Hour)))
	for i, remote := range []string{"[2001:db8:1:2::1]:4000", "[2001:db8:1:2::2]:4000", "[2001:db8:1:2:ffff::9]:4001"} {
		w := loginFrom(t, a, remote, "user"+string(rune('a'+i)), nil)
		require.Equal(t, http.StatusUnauthorized, w.Code, w.Body.String())
	}
	w := loginFrom(t, a, "[2001:db8:1:2:abcd::1]:4000", "userz", nil)
	assert.Equal(t, http.StatusTooManyRequests, w.Code, "another address of the same /64: %s", w.Body.String())
	w = loginFrom(t, a, "[2001:db8:1:3::1]:4000", "userz", nil)
	assert.Equal(t, http.StatusUnauthorized, w.Code, "another /64: %s", w.Body.String())

	for i := range 3 {
		w := loginFrom(t, a, "192.0.2.7:5000", "usery", map[string]string{"X-Forwarded-For": "198.51.100." + string(rune('1'+i))})
		require.Equal(t, http.StatusUnauthorized, w.Code, w.Body.String())
	}
	w = loginFrom(t, a, "192.0.2.7:5000", "usery", map[string]string{"X-Forwarded-For": "198.51.100.9", "X-Real-IP": "198.51.100.9"})
	assert.Equal(t, http.StatusTooManyRequests, w.Code, "forwarding headers are not trusted: %s", w.Body.String())
}

// TestMemberAndCartBadInput: malformed bodies, wrong types and out-of-range numbers are
// clear 4xx answers, never a 500, and change nothing.
func TestMemberAndCartBadInput(t *testing.T) {
	a := start(t, embedded, nil, fastHash)
	s := signUpAndLogin(t, a, "alice")
	tok := s.AccessToken
	for _, c := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/v1/members", `{"login_id":"bob","password":123}`, 400},
		{"POST", "/v1/members", `{"login_id":"bob\u0000x","password":"correct horse"}`, 400},
		{"POST", "/v1/members", `{"login_id":"bob","password":"` + strings.Repeat("p", 73) + `"}`, 400},
		{"POST", "/v1/members", `{"login_id":"` + strings.Repeat("b", 65) + `","password":"correct horse"}`, 400},
		{"POST", "/v1/members", `[]`, 400},
		{"POST", "/v1/members", `{"login_id":"bob","password":"correct horse","extra":1}`, 400},
		{"POST", "/v1/sessions", `{"login_id":"alice","password":"` + strings.Repeat("p", 73) + `"}`, 400},
		{"POST", "/v1/sessions", `{"login_id":"al\u0000ice","password":"correct horse"}`, 400},
		{"POST", "/v1/sessions", `null`, 400},
		{"POST", "/v1/sessions/refresh", `{"refresh_token":5}`, 400},
		{"POST", "/v1/sessions/refresh", `{"refresh_token":"` + strings.Repeat("r", 500) + `"}`, 401},
		{"POST", "/v1/cart/items", `{"product_id":"SKU-1","qty":1e30}`, 400},
		{"POST", "/v1/cart/items", `{"product_id":"SKU-1","qty":9223372036854775807}`, 400},
		{"POST", "/v1/cart/items", `{"product_id":"SKU-1","qty":-1}`, 400},
		{"POST", "/v1/cart/items", `{"product_id":"SKU-1","qty":0}`, 400},
		{"POST", "/v1/cart/items", `{"product_id":"SKU-1","qty":"2"}`, 400},
		{"POST", "/v1/cart/items", `{"product_id":"no such product","qty":1}`, 400},
		{"POST", "/v1/cart/items", `{"product_id":"NO-SUCH","qty":1}`, 404},
		{"PUT", "/v1/cart/items/NO-SUCH", `{"qty":1}`, 404},
		{"PUT", "/v1/cart/items/SKU-1", `{"qty":1000}`, 400},
		{"PUT", "/v1/cart/items/SKU-1", `{}`, 400},
		{"PUT", "/v1/cart/items/SKU-1", `{"qty":1}{"qty":2}`, 400},
		{"POST", "/v1/orders", `{"from_cart":true,"lines":[{"product_id":"SKU-1","qty":1}]}`, 400},
		{"POST", "/v1/orders", `{"from_cart":true}`, 422},
		{"POST", "/v1/orders", `{"from_cart":"yes"}`, 400},
	} {
		r := a.call(c.method, c.path, tok, "key-"+c.path+c.body[:min(len(c.body), 40)], c.body)
		assert.Equal(t, c.status, r.Status, "%s %s %s: %s", c.method, c.path, c.body, r.Body)
	}
	big := `{"login_id":"bob","password":"` + strings.Repeat("p", 2<<20) + `"}`
	r := a.call("POST", "/v1/members", "", "", big)
	assert.Equal(t, http.StatusRequestEntityTooLarge, r.Status, "%s", r.Body)
	c := as[server.CartJSON](t, expect(t, a.call("GET", "/v1/cart", tok, "", nil), http.StatusOK))
	assert.Empty(t, c.Items, "nothing changed")
}
