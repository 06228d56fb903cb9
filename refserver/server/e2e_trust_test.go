package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/server"
)

// webhook POSTs body to the webhook route with signature, as a PG (or an attacker) would.
func (a *app) webhook(body []byte, signature string) resp {
	a.t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.url+"/v1/payments/webhook", bytes.NewReader(body))
	require.NoError(a.t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(pgsim.SignatureHeader, signature)
	res, err := a.hc.Do(req)
	require.NoError(a.t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(a.t, err)
	return resp{Status: res.StatusCode, Header: res.Header, Body: raw}
}

// TestForgedWebhookNeverPays is issue 13's attack: with a slow PG, pay for an order with a
// card the PG declines and, while the PG is still deciding, post a "payment.approved"
// webhook for it. Signed with the simulator's published secret, it is refused on its
// signature (no deployment accepts that secret); signed with the deployment's real secret
// (as if it had leaked), the PG asked directly does not confirm it and it is refused too.
// Either way the pay call's own answer wins: the order fails, nothing is sold, no reward is
// earned, and the audit is clean. Then a contradiction is recorded for real (the PG reverses
// an approval and says so): the audit reports it.
func TestForgedWebhookNeverPays(t *testing.T) {
	const latency = time.Second
	slowFull := backend{name: full.name + "-slow-pg", config: func(t *testing.T) (server.Config, *pgsim.Simulator, func(string)) {
		rdb := testenv.Redis(t)
		return fullConfig(t, testenv.MySQLDSN(t), rdb.Options().Addr, rdb.Options().DB, pgsim.WithLatency(latency, latency))
	}}
	for _, b := range []backend{embedded, slowFull} {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, func(cfg *server.Config) {
				cfg.PGSimLatency = latency // the in-process simulator's
				cfg.PGTimeout = 10 * time.Second
			})
			admin := setup(t, a, "kbd", 10_000, 3)
			mallory := token(t, "mallory", false)
			o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", mallory, "order-1", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "kbd", Qty: 1}}}), http.StatusCreated))

			paid := make(chan resp, 1)
			go func() {
				r, err := a.try("POST", "/v1/orders/"+o.ID+"/pay", mallory, "pay-1", server.PayJSON{Method: "CARD", Token: pgsim.TokenDecline})
				if err != nil {
					r = resp{Body: []byte(err.Error())}
				}
				paid <- r
			}()
			require.Eventually(t, func() bool {
				return as[server.OrderJSON](t, a.call("GET", "/v1/orders/"+o.ID, mallory, "", nil)).Status == "PAYING"
			}, 30*time.Second, 20*time.Millisecond, "the payment to be in flight")
			time.Sleep(100 * time.Millisecond) // the payment is recorded; the PG answers in a second

			forged := fmt.Appendf(nil, `{"type":"payment.approved","payment_id":"pay-%s","amount":%d,"currency":"KRW","reference":"pgsim-pay-999","created_at":%q}`,
				o.ID, o.AmountDue, time.Now().UTC().Format(time.RFC3339))
			expectProblem(t, a.webhook(forged, pgsim.Sign([]byte(pgsim.DefaultWebhookSecret), forged)), http.StatusBadRequest, "invalid_webhook")
			if b.name == slowFull.name {
				expectProblem(t, a.webhook(forged, pgsim.Sign(testWebhookSecret, forged)), http.StatusConflict, "webhook_unconfirmed")
			}

			r := <-paid
			got := as[server.OrderJSON](t, expect(t, r, http.StatusOK))
			assert.Equal(t, "PAYMENT_FAILED", got.Status)
			assert.Equal(t, pgsim.CodeCardDeclined, got.FailureCode)
			assert.Equal(t, "PAYMENT_FAILED", as[server.OrderJSON](t, a.call("GET", "/v1/orders/"+o.ID, mallory, "", nil)).Status)
			st := as[server.StockJSON](t, a.call("GET", "/v1/products/kbd/stock", "", "", nil))
			assert.Equal(t, []int64{3, 0, 0}, []int64{st.Available, st.Reserved, st.Sold}, "available, reserved, sold")
			assert.Equal(t, server.BalanceJSON{}, as[server.BalanceJSON](t, a.call("GET", "/v1/points", mallory, "", nil)), "no reward points")
			audit := as[server.AuditJSON](t, expect(t, a.call("GET", "/v1/admin/audit", admin, "", nil), http.StatusOK))
			assert.True(t, audit.OK, "%v", audit.Discrepancies)
			if b.name == slowFull.name {
				assert.Contains(t, string(a.call("GET", "/metrics", token(t, "ops", true), "", nil).Body), `commercekit_payment_contradictions_total{cause="webhook"} 1`)
			}

			// A contradiction recorded for real: an order is paid, then the PG reverses the
			// approval and announces it. The payment goes to REVIEW; the audit reports it.
			alice := token(t, "alice", false)
			o = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "order-2", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "kbd", Qty: 1}}}), http.StatusCreated))
			o = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "pay-2",
				server.PayJSON{Method: "CARD", Token: "tok_visa"}), http.StatusOK))
			require.Equal(t, "PAID", o.Status)
			require.NoError(t, a.sim.Overturn(o.PaymentID))
			body, sig, err := a.sim.Webhook(o.PaymentID)
			require.NoError(t, err)
			expect(t, a.webhook(body, sig), http.StatusOK)
			audit = as[server.AuditJSON](t, expect(t, a.call("GET", "/v1/admin/audit", admin, "", nil), http.StatusOK))
			assert.False(t, audit.OK)
			assert.True(t, containsAll(audit.Discrepancies, o.ID, "REVIEW"), "%v", audit.Discrepancies)
			assert.Contains(t, string(a.call("GET", "/metrics", token(t, "ops", true), "", nil).Body), `commercekit_payment_transitions_total{cause="webhook",to="REVIEW"} 1`)

			// The order was paid by that payment: no operator call gives it back.
			resolve := "/v1/admin/payments/" + o.PaymentID + "/resolve-review"
			expectProblem(t, a.call("POST", resolve, admin, "", nil), http.StatusConflict, "payment_in_use")
			expectProblem(t, a.call("POST", resolve, alice, "", nil), http.StatusForbidden, "forbidden")

			// Mallory's declined card: the PG overturns its decline and takes the money. The
			// operator gives it back, once however often asked; that payment leaves the audit.
			require.NoError(t, a.sim.Overturn(got.PaymentID))
			body, sig, err = a.sim.Webhook(got.PaymentID)
			require.NoError(t, err)
			expect(t, a.webhook(body, sig), http.StatusOK)
			for range 2 {
				p := as[server.PaymentJSON](t, expect(t, a.call("POST", "/v1/admin/payments/"+got.PaymentID+"/resolve-review", admin, "", nil), http.StatusOK))
				assert.Equal(t, "REFUNDED", p.State)
				assert.Equal(t, got.AmountDue, p.Refunded)
			}
			assert.Equal(t, 1, a.sim.Charges(got.PaymentID))
			st2, err := a.sim.Status(t.Context(), got.PaymentID)
			require.NoError(t, err)
			assert.Equal(t, got.AmountDue, st2.Canceled, "refunded once at the PG")
			audit = as[server.AuditJSON](t, expect(t, a.call("GET", "/v1/admin/audit", admin, "", nil), http.StatusOK))
			assert.False(t, containsAll(audit.Discrepancies, got.ID), "%v", audit.Discrepancies)
			expectProblem(t, a.call("POST", "/v1/admin/payments/pay-none/resolve-review", admin, "", nil), http.StatusNotFound, "payment_not_found")
		})
	}
}

// containsAll reports whether one of lines contains every one of parts.
func containsAll(lines []string, parts ...string) bool {
	for _, l := range lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// TestTokenSubjectNotAUserID: a validly signed token whose subject is no user ID is refused
// at the door (401 invalid_token), not answered 400 by every route.
func TestTokenSubjectNotAUserID(t *testing.T) {
	a := start(t, embedded, nil)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, server.Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject: "not a user", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
	}}).SignedString(testSecret)
	require.NoError(t, err)
	expectProblem(t, a.call("GET", "/v1/orders", tok, "", nil), http.StatusUnauthorized, "invalid_token")
	expectProblem(t, a.call("POST", "/v1/orders", tok, "k", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p", Qty: 1}}}),
		http.StatusUnauthorized, "invalid_token")
}

// TestTokenIDsAreChecked: a signed token's jti and sid are keys of the logout denylist and
// of the sessions (64 bytes in SQL). One that no store can hold (a NUL, 65 bytes) is an
// invalid token, 401 — it was a 503 dependency_unavailable on every route (the denylist's
// read failing), a 500 on logout, and on MySQL a logout that could not be written.
func TestTokenIDsAreChecked(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, nil)
			sign := func(jti, sid string) string {
				tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, server.Claims{SessionID: sid, RegisteredClaims: jwt.RegisteredClaims{
					Subject: "eve", ID: jti, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
				}}).SignedString(testSecret)
				require.NoError(t, err)
				return tok
			}
			for _, tok := range []string{sign("j\x00", ""), sign(strings.Repeat("j", 65), ""), sign("j1", "s\x00"),
				sign("j2", strings.Repeat("s", 65)), sign("j 3", "")} {
				expectProblem(t, a.call("GET", "/v1/points", tok, "", nil), http.StatusUnauthorized, "invalid_token")
				expectProblem(t, a.call("DELETE", "/v1/sessions", tok, "", nil), http.StatusUnauthorized, "invalid_token")
			}
			// The longest ID a store holds works, and its logout holds.
			tok := sign(strings.Repeat("j", 64), "")
			expect(t, a.call("GET", "/v1/points", tok, "", nil), http.StatusOK)
			expect(t, a.call("DELETE", "/v1/sessions", tok, "", nil), http.StatusNoContent)
			expectProblem(t, a.call("GET", "/v1/points", tok, "", nil), http.StatusUnauthorized, "token_revoked")
		})
	}
}

// lockedBuffer is a log destination safe for the server's goroutines and the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the JSON log lines written so far, decoded.
func (b *lockedBuffer) lines(t *testing.T) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(b.buf.Bytes(), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal(l, &m), "%s", l)
		out = append(out, m)
	}
	return out
}

// TestReadyzDisclosesNoInternals: /readyz is public (a load balancer polls it without a
// token), so it says of a backend that is down only that it is down. The error itself —
// the backend's address, the PG's URL and path, a driver's message — is for the operator:
// it goes to the log, as every 5xx problem's cause does (problemFor), never to an
// anonymous caller. It was answered as it came: "dial tcp 127.0.0.1:1: connect:
// connection refused", `Get "http://127.0.0.1:2/internal-pg/v1/payments/readyz-probe"`.
func TestReadyzDisclosesNoInternals(t *testing.T) {
	var logs lockedBuffer
	a := start(t, embedded, func(c *server.Config) {
		c.RedisAddr, c.WebhookSecret = "127.0.0.1:1", string(testWebhookSecret)
		c.PGSimURL = "http://127.0.0.1:2/internal-pg"
	}, server.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	r := expect(t, a.call("GET", "/readyz", "", "", nil), http.StatusServiceUnavailable)
	assert.Equal(t, "1", r.Header.Get("Retry-After"), "a 503 says when to ask again, as the OpenAPI document promises")
	assert.Equal(t, server.Readiness{Status: "unavailable", Checks: map[string]string{
		"database": "ok", "redis": "unavailable", "payment_gateway": "unavailable", "commerce": "unavailable",
	}}, as[server.Readiness](t, r))
	for _, internal := range []string{"127.0.0.1", "internal-pg", "dial tcp", "refused"} {
		assert.NotContains(t, string(r.Body), internal)
	}

	// The operator learns why from the log: one line per failing check, with its error.
	failed := map[string]string{}
	for _, l := range logs.lines(t) {
		if l["msg"] == "readiness check failed" {
			failed[l["check"].(string)] = l["error"].(string)
		}
	}
	require.Len(t, failed, 3, "%v", failed)
	assert.Contains(t, failed["redis"], "127.0.0.1:1")
	assert.Contains(t, failed["commerce"], "127.0.0.1:1")
	assert.Contains(t, failed["payment_gateway"], "http://127.0.0.1:2/internal-pg/")
}

// TestPprofAdminOnly: with COMMERCEKIT_PPROF on, the profiles (heap, goroutine stacks, the
// command line with its flags) are for admin tokens only: anonymous callers get 401, members
// 403, a logged-out admin token 401 token_revoked, on every profile and through paths that
// clean to one; with it off there is no such route.
func TestPprofAdminOnly(t *testing.T) {
	a := start(t, embedded, func(c *server.Config) { c.Pprof = true })
	admin, revoked, alice := token(t, "ops", true), token(t, "ops", true), token(t, "alice", false)
	expect(t, a.call("DELETE", "/v1/sessions", revoked, "", nil), http.StatusNoContent)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=2", "/debug/pprof/cmdline",
		"/debug/pprof/symbol", "/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=1", "/debug//pprof/heap", "/debug/x/../pprof/heap"} {
		t.Run(path, func(t *testing.T) {
			for _, method := range []string{"GET", "HEAD"} {
				r := a.call(method, path, "", "", nil)
				require.Equal(t, http.StatusUnauthorized, r.Status, "%s anonymous: %s", method, r.Body)
				require.Equal(t, http.StatusForbidden, a.call(method, path, alice, "", nil).Status, "%s member", method)
				require.Equal(t, http.StatusUnauthorized, a.call(method, path, revoked, "", nil).Status, "%s revoked admin", method)
			}
			expectProblem(t, a.call("GET", path, "", "", nil), http.StatusUnauthorized, "missing_token")
			expectProblem(t, a.call("GET", path, alice, "", nil), http.StatusForbidden, "forbidden")
			expectProblem(t, a.call("GET", path, revoked, "", nil), http.StatusUnauthorized, "token_revoked")
		})
	}
	expect(t, a.call("GET", "/debug/pprof/heap", admin, "", nil), http.StatusOK)
	expect(t, a.call("GET", "/debug/pprof/cmdline", admin, "", nil), http.StatusOK)

	off := start(t, embedded, nil)
	expectProblem(t, off.call("GET", "/debug/pprof/heap", admin, "", nil), http.StatusNotFound, "not_found")
	expectProblem(t, off.call("GET", "/debug/pprof/", admin, "", nil), http.StatusNotFound, "not_found")
}

// TestCouponOwnershipNotDisclosed: a coupon of another user named at checkout is refused
// exactly as a coupon that does not exist (coupon.ErrNotOwner is answered like
// coupon.ErrCouponNotFound, so that nobody learns which coupon IDs exist). The code was the
// same, 422 coupon_unusable, but the detail said "coupon: coupon belongs to another user"
// for one and "coupon: coupon not found" for the other: whoever had a coupon ID learned that
// it was real and someone else's. Nothing is placed, and the coupon stays its owner's.
func TestCouponOwnershipNotDisclosed(t *testing.T) {
	a := start(t, embedded, nil)
	setup(t, a, "p1", 9000, 5)
	alice, bob := token(t, "alice", false), token(t, "bob", false)
	c := as[server.CouponJSON](t, expect(t, a.call("POST", "/v1/coupon-templates/tpl-p1/issue", alice, "issue-1", nil), http.StatusCreated))
	const unknown = "0123456789abcdef0123456789abcdef"
	require.Len(t, c.ID, len(unknown))
	orderID := regexp.MustCompile(`ord_[0-9a-f]+`)
	// refusal is the problem of an order by bob naming coupon, with the coupon's and the
	// order's IDs and the request ID taken out.
	refusal := func(fromCart bool, coupon string) server.Problem {
		t.Helper()
		in := server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}, CouponID: coupon}
		if fromCart {
			expect(t, a.call("POST", "/v1/cart/items", bob, "cart-"+coupon, server.LineJSON{ProductID: "p1", Qty: 1}), http.StatusOK)
			in = server.PlaceOrderJSON{FromCart: true, CouponID: coupon}
		}
		p := expectProblem(t, a.call("POST", "/v1/orders", bob, fmt.Sprintf("order-%t-%s", fromCart, coupon), in),
			http.StatusUnprocessableEntity, "coupon_unusable")
		assert.NotContains(t, p.Detail, "another user")
		p.Detail = orderID.ReplaceAllString(strings.ReplaceAll(p.Detail, coupon, "<coupon>"), "<order>")
		p.RequestID = ""
		return p
	}
	for _, fromCart := range []bool{false, true} {
		assert.Equal(t, refusal(fromCart, unknown), refusal(fromCart, c.ID), "from cart: %t", fromCart)
		expect(t, a.call("DELETE", "/v1/cart/items/p1", bob, "", nil), http.StatusOK)
	}
	assert.Empty(t, as[server.OrderPageJSON](t, expect(t, a.call("GET", "/v1/orders", bob, "", nil), http.StatusOK)).Orders)
	wallet := as[server.CouponPageJSON](t, expect(t, a.call("GET", "/v1/coupons", alice, "", nil), http.StatusOK))
	require.Len(t, wallet.Coupons, 1)
	assert.Equal(t, []string{c.ID, "available"}, []string{wallet.Coupons[0].ID, wallet.Coupons[0].State})
}

// TestMetricsNotPublic: /metrics told anyone the shop's business as it happened (orders by
// outcome, refunds, payment contradictions, each route's traffic) and its inner state
// (breakers, relay lag, dead letters). It answers an admin token, or the scrape token of
// Config.MetricsToken (Prometheus's bearer credentials), and nobody else; the scrape token
// opens nothing but /metrics.
func TestMetricsNotPublic(t *testing.T) {
	const scrape = "scrape-0123456789abcdef0123456789abcdef"
	a := start(t, embedded, func(c *server.Config) { c.MetricsToken = scrape })
	admin, revoked, alice := token(t, "ops", true), token(t, "ops", true), token(t, "alice", false)
	expect(t, a.call("DELETE", "/v1/sessions", revoked, "", nil), http.StatusNoContent)
	for _, method := range []string{"GET", "HEAD"} {
		require.Equal(t, http.StatusUnauthorized, a.call(method, "/metrics", "", "", nil).Status, "%s anonymous", method)
		require.Equal(t, http.StatusForbidden, a.call(method, "/metrics", alice, "", nil).Status, "%s member", method)
		require.Equal(t, http.StatusUnauthorized, a.call(method, "/metrics", revoked, "", nil).Status, "%s revoked admin", method)
	}
	expectProblem(t, a.call("GET", "/metrics", "", "", nil), http.StatusUnauthorized, "missing_token")
	expectProblem(t, a.call("GET", "/metrics", alice, "", nil), http.StatusForbidden, "forbidden")
	for _, wrong := range []string{strings.ToUpper(scrape), scrape[:len(scrape)-1] + "0", scrape + "0", scrape[1:]} {
		expectProblem(t, a.call("GET", "/metrics", wrong, "", nil), http.StatusUnauthorized, "invalid_token")
	}
	for _, bearer := range []string{admin, scrape} {
		r := expect(t, a.call("GET", "/metrics", bearer, "", nil), http.StatusOK)
		require.Contains(t, string(r.Body), "commercekit_http_request_duration_seconds")
	}
	// The scrape token is no admin token, nor a user's.
	expectProblem(t, a.call("GET", "/v1/admin/audit", scrape, "", nil), http.StatusUnauthorized, "invalid_token")
	expectProblem(t, a.call("GET", "/v1/points", scrape, "", nil), http.StatusUnauthorized, "invalid_token")

	// Without a scrape token, only an admin token reads it.
	off := start(t, embedded, nil)
	expectProblem(t, off.call("GET", "/metrics", "", "", nil), http.StatusUnauthorized, "missing_token")
	expectProblem(t, off.call("GET", "/metrics", scrape, "", nil), http.StatusUnauthorized, "invalid_token")
	expect(t, off.call("GET", "/metrics", admin, "", nil), http.StatusOK)
}
