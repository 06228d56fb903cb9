package server_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/server"
)

var backends = []backend{embedded, full}

// setup creates a product (price, stock) and a coupon template (1,000 won off orders of
// 5,000 or more), and returns the admin's token.
func setup(t *testing.T, a *app, product string, price, stock int64) string {
	t.Helper()
	admin := token(t, "admin", true)
	expect(t, a.call("POST", "/v1/products", admin, "", server.NewProductJSON{ID: product, Name: "Product " + product,
		Price: price, Stock: stock}), http.StatusCreated)
	expect(t, a.call("POST", "/v1/coupon-templates", admin, "", server.CouponTemplateJSON{ID: "tpl-" + product,
		Name: "1,000 off", Kind: "fixed", Amount: 1000, MinOrderAmount: 5000, PerUserLimit: 1}), http.StatusCreated)
	return admin
}

func TestFlows(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, nil)
			admin := setup(t, a, "p1", 9000, 5)
			alice := token(t, "alice", false)

			// Catalogue: creating again is idempotent; price and stock updates.
			p := as[server.ProductJSON](t, expect(t, a.call("POST", "/v1/products", admin, "",
				server.NewProductJSON{ID: "p1", Name: "Product p1", Price: 9000, Stock: 5}), http.StatusCreated))
			assert.Equal(t, int64(5), p.Stock.Available)
			p = as[server.ProductJSON](t, expect(t, a.call("PUT", "/v1/products/p1/price", admin, "", server.PriceJSON{Price: 10000}), http.StatusOK))
			assert.Equal(t, int64(10000), p.Price)
			st := as[server.StockJSON](t, expect(t, a.call("PUT", "/v1/products/p1/stock", admin, "", server.SetStockJSON{OnHand: 10}), http.StatusOK))
			assert.Equal(t, int64(10), st.Available)
			page := as[server.ProductPageJSON](t, expect(t, a.call("GET", "/v1/products?limit=10", "", "", nil), http.StatusOK))
			require.Len(t, page.Products, 1)
			assert.Equal(t, int64(10000), page.Products[0].Price)

			// Coupon, issued first come (idempotent on the key), and points bought.
			c := as[server.CouponJSON](t, expect(t, a.call("POST", "/v1/coupon-templates/tpl-p1/issue", alice, "issue-1", nil), http.StatusCreated))
			again := as[server.CouponJSON](t, expect(t, a.call("POST", "/v1/coupon-templates/tpl-p1/issue", alice, "issue-1", nil), http.StatusCreated))
			assert.Equal(t, c.ID, again.ID)
			wallet := as[server.CouponPageJSON](t, expect(t, a.call("GET", "/v1/coupons", alice, "", nil), http.StatusOK))
			require.Len(t, wallet.Coupons, 1)
			top := as[server.TopUpJSON](t, expect(t, a.call("POST", "/v1/points/top-ups", alice, "top-1",
				server.TopUpRequestJSON{Amount: 5000, Method: "CARD", Token: "tok_ok"}), http.StatusCreated))
			assert.Equal(t, "COMPLETED", top.Status)
			expect(t, a.call("GET", "/v1/points/top-ups/"+top.ID, alice, "", nil), http.StatusOK)
			assert.Equal(t, int64(5000), as[server.BalanceJSON](t, a.call("GET", "/v1/points", alice, "", nil)).Available)

			// Place with the coupon and points, pay by card.
			o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "order-1", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 2}}, CouponID: c.ID, Points: 2000}), http.StatusCreated))
			assert.Equal(t, "PENDING_PAYMENT", o.Status)
			assert.Equal(t, []int64{20000, 1000, 2000, 17000}, []int64{o.Subtotal, o.Discount, o.Points, o.AmountDue})
			assert.Equal(t, int64(2), as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil)).Reserved)
			o = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "pay-1",
				server.PayJSON{Method: "CARD", Token: "tok_visa"}), http.StatusOK))
			assert.Equal(t, "PAID", o.Status)
			assert.Equal(t, int64(170), o.Reward, "1% of the card amount")
			st = as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil))
			assert.Equal(t, []int64{8, 0, 2}, []int64{st.Available, st.Reserved, st.Sold})
			bal := as[server.BalanceJSON](t, a.call("GET", "/v1/points", alice, "", nil))
			assert.Equal(t, int64(5000-2000+170), bal.Available)
			hist := as[server.HistoryPageJSON](t, expect(t, a.call("GET", "/v1/points/history?limit=50", alice, "", nil), http.StatusOK))
			assert.NotEmpty(t, hist.Entries)
			got := as[server.OrderJSON](t, expect(t, a.call("GET", "/v1/orders/"+o.ID, alice, "", nil), http.StatusOK))
			assert.Equal(t, o.ID, got.ID)
			mine := as[server.OrderPageJSON](t, expect(t, a.call("GET", "/v1/orders?status=PAID", alice, "", nil), http.StatusOK))
			require.Len(t, mine.Orders, 1)

			// Cancel the paid order: refunded, points and coupon back, stock returned.
			o = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+o.ID+"/cancel", alice, "", nil), http.StatusOK))
			assert.Equal(t, "CANCELLED", o.Status)
			assert.Equal(t, int64(5000), as[server.BalanceJSON](t, a.call("GET", "/v1/points", alice, "", nil)).Available)
			st = as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil))
			assert.Equal(t, int64(10), st.Available)
			wallet = as[server.CouponPageJSON](t, a.call("GET", "/v1/coupons?state=available", alice, "", nil))
			assert.Len(t, wallet.Coupons, 1, "the coupon is usable again")

			// A declined card: PAYMENT_FAILED with the PG's code, everything given back.
			o = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "order-2", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}, CouponID: c.ID, Points: 500}), http.StatusCreated))
			o = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "pay-2",
				server.PayJSON{Method: "CARD", Token: pgsim.TokenDecline}), http.StatusOK))
			assert.Equal(t, "PAYMENT_FAILED", o.Status)
			assert.Equal(t, pgsim.CodeCardDeclined, o.FailureCode)
			assert.Equal(t, int64(10), as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil)).Available)
			assert.Equal(t, int64(5000), as[server.BalanceJSON](t, a.call("GET", "/v1/points", alice, "", nil)).Available)

			// An unpaid order cancelled at once; an order paid with points alone.
			o = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "order-3", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))
			assert.Equal(t, "CANCELLED", as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+o.ID+"/cancel", alice, "", nil), http.StatusOK)).Status)
			expect(t, a.call("PUT", "/v1/products/p1/price", admin, "", server.PriceJSON{Price: 3000}), http.StatusOK)
			o = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "order-4", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}, Points: 3000}), http.StatusCreated))
			assert.Equal(t, int64(0), o.AmountDue)
			o = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "pay-4", server.PayJSON{}), http.StatusOK))
			assert.Equal(t, "PAID", o.Status)
			assert.Empty(t, o.PaymentID, "nothing went through the PG")

			// Every invariant holds; events were relayed; operations answer.
			audit := as[server.AuditJSON](t, expect(t, a.call("GET", "/v1/admin/audit", admin, "", nil), http.StatusOK))
			assert.True(t, audit.OK, "%v", audit.Discrepancies)
			require.Eventually(t, func() bool {
				return strings.Contains(string(a.call("GET", "/metrics", token(t, "ops", true), "", nil).Body), `commercekit_outbox_events_total{stage="published"`)
			}, 30*time.Second, 20*time.Millisecond, "the outbox relay to publish")
			metrics := string(a.call("GET", "/metrics", token(t, "ops", true), "", nil).Body)
			for _, series := range []string{
				`commercekit_http_request_duration_seconds_count{method="POST",route="POST /v1/orders",status="201"}`,
				`commercekit_orders_total{method="CARD",outcome="paid"} 1`,
				`commercekit_orders_total{method="POINTS",outcome="paid"} 1`,
				`commercekit_orders_total{method="none",outcome="placed"} `,
				`commercekit_operations_total{component="inventory",op="reserve",result="ok"}`,
				`commercekit_idempotency_events_total{event="completed"}`,
				`commercekit_payment_breaker_state 0`,
				"commercekit_outbox_relay_lag_seconds",
			} {
				assert.Contains(t, metrics, series)
			}
			// The approval is recorded by whichever comes first, the gateway's answer or the
			// simulator's webhook (confirmed with the PG), so either cause is right.
			assert.Regexp(t, `commercekit_payment_transitions_total\{cause="(gateway|webhook)",to="APPROVED"\}`, metrics)
			ready := as[server.Readiness](t, expect(t, a.call("GET", "/readyz", "", "", nil), http.StatusOK))
			assert.Equal(t, "ready", ready.Status)
			expect(t, a.call("GET", "/healthz", "", "", nil), http.StatusOK)
			if b.name == full.name {
				for _, name := range []string{"database", "redis", "kafka", "payment_gateway", "commerce"} {
					assert.Equal(t, "ok", ready.Checks[name], name)
				}
			}
		})
	}
}

// TestPaymentHistory: the payment of an order and of a top-up, with every change of its
// state and its refunds, is readable by its owner (and an admin) only; an order that sent
// nothing to the PG has none.
func TestPaymentHistory(t *testing.T) {
	a := start(t, embedded, nil)
	admin := setup(t, a, "p1", 9000, 5)
	alice, bob := token(t, "alice", false), token(t, "bob", false)

	o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "order-1", server.PlaceOrderJSON{
		Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))
	expectProblem(t, a.call("GET", "/v1/orders/"+o.ID+"/payment", alice, "", nil), http.StatusNotFound, "payment_not_found")
	o = as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "pay-1",
		server.PayJSON{Method: "CARD", Token: "tok_visa"}), http.StatusOK))
	r := expect(t, a.call("GET", "/v1/orders/"+o.ID+"/payment", alice, "", nil), http.StatusOK)
	assert.NotContains(t, string(r.Body), "tok_visa", "the card token is not shown")
	p := as[server.PaymentJSON](t, r)
	assert.Equal(t, []any{o.PaymentID, o.ID, int64(9000), "CARD", "APPROVED"}, []any{p.ID, p.OrderID, p.Amount, p.Method, p.State})
	require.Len(t, p.Transitions, 2)
	assert.Equal(t, []string{"", "REQUESTED", "created"}, []string{p.Transitions[0].From, p.Transitions[0].To, p.Transitions[0].Cause})
	assert.Equal(t, []string{"REQUESTED", "APPROVED"}, []string{p.Transitions[1].From, p.Transitions[1].To})
	assert.Empty(t, p.Refunds)

	expect(t, a.call("POST", "/v1/orders/"+o.ID+"/cancel", alice, "", nil), http.StatusOK)
	p = as[server.PaymentJSON](t, expect(t, a.call("GET", "/v1/orders/"+o.ID+"/payment", alice, "", nil), http.StatusOK))
	assert.Equal(t, []any{"REFUNDED", int64(9000)}, []any{p.State, p.Refunded})
	require.Len(t, p.Refunds, 1)
	assert.Equal(t, []any{int64(9000), "SUCCEEDED"}, []any{p.Refunds[0].Amount, p.Refunds[0].State})
	assert.Equal(t, "REFUNDED", p.Transitions[len(p.Transitions)-1].To)

	expectProblem(t, a.call("GET", "/v1/orders/"+o.ID+"/payment", bob, "", nil), http.StatusNotFound, "order_not_found")
	expect(t, a.call("GET", "/v1/orders/"+o.ID+"/payment", admin, "", nil), http.StatusOK)
	expectProblem(t, a.call("GET", "/v1/orders/nope/payment", alice, "", nil), http.StatusNotFound, "order_not_found")

	top := as[server.TopUpJSON](t, expect(t, a.call("POST", "/v1/points/top-ups", alice, "top-1",
		server.TopUpRequestJSON{Amount: 9000, Method: "CARD", Token: "tok_ok"}), http.StatusCreated))
	p = as[server.PaymentJSON](t, expect(t, a.call("GET", "/v1/points/top-ups/"+top.ID+"/payment", alice, "", nil), http.StatusOK))
	assert.Equal(t, []any{top.PaymentID, int64(9000), "APPROVED"}, []any{p.ID, p.Amount, p.State})
	expectProblem(t, a.call("GET", "/v1/points/top-ups/"+top.ID+"/payment", bob, "", nil), http.StatusNotFound, "top_up_not_found")

	// An order of points alone is paid as it is placed, with pay_with_points.
	expectProblem(t, a.call("POST", "/v1/orders", alice, "order-2", server.PlaceOrderJSON{
		Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}, Points: 8999, PayWithPoints: true}), http.StatusBadRequest, "invalid_request")
	points := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "order-2", server.PlaceOrderJSON{
		Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}, Points: 9000, PayWithPoints: true}), http.StatusCreated))
	assert.Equal(t, "PAID", points.Status)
	expectProblem(t, a.call("GET", "/v1/orders/"+points.ID+"/payment", alice, "", nil), http.StatusNotFound, "payment_not_found")
	assert.Equal(t, int64(0), as[server.BalanceJSON](t, a.call("GET", "/v1/points", alice, "", nil)).Total)
}

func TestAuthRules(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, nil)
			admin := setup(t, a, "p1", 9000, 5)
			alice, bob := token(t, "alice", false), token(t, "bob", false)
			o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "k", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))

			expectProblem(t, a.call("GET", "/v1/orders", "", "", nil), http.StatusUnauthorized, "missing_token")
			expectProblem(t, a.call("GET", "/v1/orders", "garbage", "", nil), http.StatusUnauthorized, "invalid_token")
			forged, err := server.IssueToken([]byte("another-secret-0123456"), "alice", true, time.Hour, time.Now())
			require.NoError(t, err)
			expectProblem(t, a.call("GET", "/v1/orders", forged, "", nil), http.StatusUnauthorized, "invalid_token")
			expired, err := server.IssueToken(testSecret, "alice", false, time.Second, time.Now().Add(-time.Hour))
			require.NoError(t, err)
			expectProblem(t, a.call("GET", "/v1/orders", expired, "", nil), http.StatusUnauthorized, "token_expired")

			// Admin routes refuse users.
			expectProblem(t, a.call("POST", "/v1/products", alice, "", server.NewProductJSON{ID: "x", Name: "x", Price: 1}), http.StatusForbidden, "forbidden")
			expectProblem(t, a.call("GET", "/v1/admin/audit", alice, "", nil), http.StatusForbidden, "forbidden")
			expectProblem(t, a.call("POST", "/v1/coupon-templates", bob, "", server.CouponTemplateJSON{ID: "t", Kind: "fixed", Amount: 1}), http.StatusForbidden, "forbidden")

			// Another user's order does not exist for them, whatever they try.
			expectProblem(t, a.call("GET", "/v1/orders/"+o.ID, bob, "", nil), http.StatusNotFound, "order_not_found")
			expectProblem(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", bob, "bk", server.PayJSON{Method: "CARD"}), http.StatusNotFound, "order_not_found")
			expectProblem(t, a.call("POST", "/v1/orders/"+o.ID+"/cancel", bob, "", nil), http.StatusNotFound, "order_not_found")
			assert.Empty(t, as[server.OrderPageJSON](t, a.call("GET", "/v1/orders", bob, "", nil)).Orders)
			assert.Equal(t, "PENDING_PAYMENT", as[server.OrderJSON](t, a.call("GET", "/v1/orders/"+o.ID, alice, "", nil)).Status)
			// An admin sees it.
			expect(t, a.call("GET", "/v1/orders/"+o.ID, admin, "", nil), http.StatusOK)
			// And a coupon of another user cannot be applied.
			c := as[server.CouponJSON](t, expect(t, a.call("POST", "/v1/coupon-templates/tpl-p1/issue", alice, "i", nil), http.StatusCreated))
			expectProblem(t, a.call("POST", "/v1/orders", bob, "bo", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}, CouponID: c.ID}), http.StatusUnprocessableEntity, "coupon_unusable")
		})
	}
}

func TestErrorStatuses(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, func(c *server.Config) { c.MaxBodyBytes = 4096 })
			setup(t, a, "p1", 9000, 1)
			alice := token(t, "alice", false)
			line := []server.LineJSON{{ProductID: "p1", Qty: 1}}

			// 400: malformed JSON, unknown field, invalid values, no Idempotency-Key, bad paging.
			expectProblem(t, a.call("POST", "/v1/orders", alice, "k1", `{"lines": [`), http.StatusBadRequest, "malformed_request")
			expectProblem(t, a.call("POST", "/v1/orders", alice, "k1", `{"lines":[],"colour":"red"}`), http.StatusBadRequest, "malformed_request")
			p := expectProblem(t, a.call("POST", "/v1/orders", alice, "k1", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 0}}}), http.StatusBadRequest, "invalid_request")
			assert.NotEmpty(t, p.Detail)
			assert.Equal(t, "qty", p.Field)
			expectProblem(t, a.call("POST", "/v1/orders", alice, "", server.PlaceOrderJSON{Lines: line}), http.StatusBadRequest, "idempotency_key_missing")
			expectProblem(t, a.call("POST", "/v1/orders", alice, strings.Repeat("k", 256), server.PlaceOrderJSON{Lines: line}), http.StatusBadRequest, "invalid_idempotency_key")
			expectProblem(t, a.call("GET", "/v1/orders?limit=0", alice, "", nil), http.StatusBadRequest, "malformed_request")
			// A 400 is not stored: the same key with a good body then runs.
			o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "k1", server.PlaceOrderJSON{Lines: line}), http.StatusCreated))

			// 404.
			expectProblem(t, a.call("GET", "/v1/products/nope", "", "", nil), http.StatusNotFound, "product_not_found")
			expectProblem(t, a.call("GET", "/v1/products/nope/stock", "", "", nil), http.StatusNotFound, "product_not_found")
			expectProblem(t, a.call("GET", "/v1/orders/ord_nope", alice, "", nil), http.StatusNotFound, "order_not_found")
			expectProblem(t, a.call("POST", "/v1/coupon-templates/nope/issue", alice, "i", nil), http.StatusNotFound, "coupon_template_not_found")
			expectProblem(t, a.call("GET", "/v1/nothing", "", "", nil), http.StatusNotFound, "not_found")
			expectProblem(t, a.call("DELETE", "/v1/orders", alice, "", nil), http.StatusMethodNotAllowed, "method_not_allowed")

			// 413.
			expectProblem(t, a.call("POST", "/v1/orders", alice, "k2", `{"coupon_id":"`+strings.Repeat("x", 5000)+`"}`),
				http.StatusRequestEntityTooLarge, "body_too_large")

			// 422: sold out, not enough points, a rule of payment methods, a key reused.
			expectProblem(t, a.call("POST", "/v1/orders", alice, "k3", server.PlaceOrderJSON{Lines: line}), http.StatusUnprocessableEntity, "out_of_stock")
			expectProblem(t, a.call("POST", "/v1/orders", alice, "k1", server.PlaceOrderJSON{Lines: line, Points: 1}),
				http.StatusUnprocessableEntity, "idempotency_key_reused")
			expectProblem(t, a.call("POST", "/v1/points/top-ups", alice, "t1", server.TopUpRequestJSON{Amount: 5000, Method: "BNPL"}),
				http.StatusUnprocessableEntity, "payment_rule_violated")
			expectProblem(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "pay-bnpl", server.PayJSON{Method: "BNPL"}),
				http.StatusUnprocessableEntity, "payment_rule_violated")

			// 409: an order in a state that forbids the operation.
			expect(t, a.call("POST", "/v1/orders/"+o.ID+"/cancel", alice, "", nil), http.StatusOK)
			expectProblem(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "pay-late", server.PayJSON{Method: "CARD"}),
				http.StatusConflict, "invalid_order_state")

			// 422 for insufficient points (the order needs stock back first).
			expect(t, a.call("PUT", "/v1/products/p1/stock", token(t, "admin", true), "", server.SetStockJSON{OnHand: 5}), http.StatusOK)
			expectProblem(t, a.call("POST", "/v1/orders", alice, "k5", server.PlaceOrderJSON{Lines: line, Points: 100}),
				http.StatusUnprocessableEntity, "insufficient_points")

			// Readiness says the PG is down, but stays 200 "degraded": only paying fails (503,
			// TestPayGatewayDown), and pulling every instance for it would fail every route.
			if b.name == full.name {
				a.sim.SetFault(pgsim.FaultUnavailable)
				ready := as[server.Readiness](t, expect(t, a.call("GET", "/readyz", "", "", nil), http.StatusOK))
				assert.Equal(t, "degraded", ready.Status)
				assert.NotEqual(t, "ok", ready.Checks["payment_gateway"])
				a.sim.SetFault(pgsim.FaultNone)
			}
		})
	}
}

// TestPayGatewayDown: a pay while the PG refuses every call is a fast 503
// dependency_unavailable with Retry-After; nothing is charged, the order is PENDING_PAYMENT
// again with its stock reserved, and once the PG is back the same request pays it, charged
// once under a new payment ID.
func TestPayGatewayDown(t *testing.T) {
	alice := token(t, "alice", false)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, nil)
			setup(t, a, "p1", 9000, 5)
			o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "order-1", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 2}}}), http.StatusCreated))
			pay := server.PayJSON{Method: "CARD", Token: "tok_visa"}

			a.sim.SetFault(pgsim.FaultUnavailable)
			r := a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "pay-1", pay)
			p := expectProblem(t, r, http.StatusServiceUnavailable, "dependency_unavailable")
			assert.Equal(t, int(commerce.DefaultPGRetryAfter/time.Second), p.RetryAfter)
			assert.Equal(t, strconv.Itoa(p.RetryAfter), r.Header.Get("Retry-After"))
			got := as[server.OrderJSON](t, expect(t, a.call("GET", "/v1/orders/"+o.ID, alice, "", nil), http.StatusOK))
			assert.Equal(t, "PENDING_PAYMENT", got.Status)
			st := as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil))
			assert.Equal(t, []int64{3, 2, 0}, []int64{st.Available, st.Reserved, st.Sold})
			assert.Zero(t, a.sim.Stats().Charges)

			a.sim.SetFault(pgsim.FaultNone)
			paid := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "pay-1", pay), http.StatusOK))
			assert.Equal(t, "PAID", paid.Status)
			assert.Equal(t, "pay-"+o.ID+"-2", paid.PaymentID)
			assert.Equal(t, 1, a.sim.Charges(paid.PaymentID))
			assert.Equal(t, 1, a.sim.Stats().Charges)
			st = as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil))
			assert.Equal(t, []int64{3, 0, 2}, []int64{st.Available, st.Reserved, st.Sold})
		})
	}
}

// TestTopUpGatewayDown: a top-up the same way: 503 with Retry-After, nothing charged; the
// same request completes once the PG is back, charged once.
func TestTopUpGatewayDown(t *testing.T) {
	alice := token(t, "alice", false)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, nil)
			top := server.TopUpRequestJSON{Amount: 5000, Method: "CARD", Token: "tok_ok"}
			a.sim.SetFault(pgsim.FaultUnavailable)
			r := a.call("POST", "/v1/points/top-ups", alice, "top-1", top)
			expectProblem(t, r, http.StatusServiceUnavailable, "dependency_unavailable")
			assert.NotEmpty(t, r.Header.Get("Retry-After"))
			assert.Zero(t, a.sim.Stats().Charges)

			a.sim.SetFault(pgsim.FaultNone)
			tu := as[server.TopUpJSON](t, expect(t, a.call("POST", "/v1/points/top-ups", alice, "top-1", top), http.StatusCreated))
			assert.Equal(t, "COMPLETED", tu.Status)
			assert.Equal(t, 1, a.sim.Stats().Charges)
			assert.Equal(t, int64(5000), as[server.BalanceJSON](t, a.call("GET", "/v1/points", alice, "", nil)).Available)
		})
	}
}

// TestRateLimit needs no backend beyond the embedded one: the limiter is in the HTTP layer.
func TestRateLimit(t *testing.T) {
	a := start(t, embedded, func(c *server.Config) { c.RateLimit, c.RateBurst = 0.001, 2 })
	setup(t, a, "p1", 9000, 5)
	alice, bob := token(t, "alice", false), token(t, "bob", false)
	for i := range 2 {
		expect(t, a.call("POST", "/v1/orders", alice, fmt.Sprint("k", i), server.PlaceOrderJSON{
			Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated)
	}
	r := a.call("POST", "/v1/orders", alice, "k2", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}})
	p := expectProblem(t, r, http.StatusTooManyRequests, "rate_limited")
	assert.Positive(t, p.RetryAfter)
	assert.NotEmpty(t, r.Header.Get("Retry-After"))
	expect(t, a.call("GET", "/v1/orders", alice, "", nil), http.StatusOK) // reads are not limited
	expect(t, a.call("POST", "/v1/orders", bob, "k0", server.PlaceOrderJSON{
		Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated) // per user
}

// TestDependencyDown: a backend that cannot be reached is a 503, and /readyz says which.
func TestDependencyDown(t *testing.T) {
	a := start(t, embedded, func(c *server.Config) { c.RedisAddr, c.WebhookSecret = "127.0.0.1:1", string(testWebhookSecret) })
	p := expectProblem(t, a.call("GET", "/v1/products/p1/stock", "", "", nil), http.StatusServiceUnavailable, "dependency_unavailable")
	assert.Positive(t, p.RetryAfter)
	r := expect(t, a.call("GET", "/readyz", "", "", nil), http.StatusServiceUnavailable)
	ready := as[server.Readiness](t, r)
	assert.Equal(t, "unavailable", ready.Status)
	assert.NotEqual(t, "ok", ready.Checks["redis"])
	assert.Equal(t, "ok", ready.Checks["database"])
}

// TestUnpaidLimit: one account cannot hold a product unpaid (issue 13: 50 + 48 units of one
// product in one order): past the cap the answer is 422 unpaid_limit_reached, and nothing
// is reserved. The cap is configurable.
func TestUnpaidLimit(t *testing.T) {
	a := start(t, embedded, func(c *server.Config) { c.MaxUnpaidPerProduct, c.MaxUnpaidUnits = 20, 30 })
	setup(t, a, "kbd", 10_000, 100)
	mallory := token(t, "mallory", false)
	hoard := server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "kbd", Qty: 50}, {ProductID: "kbd", Qty: 48}}}
	p := expectProblem(t, a.call("POST", "/v1/orders", mallory, "hoard-1", hoard), http.StatusUnprocessableEntity, "unpaid_limit_reached")
	assert.Contains(t, p.Detail, "98 more would exceed the limit of 20")
	expect(t, a.call("POST", "/v1/orders", mallory, "o-1", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "kbd", Qty: 20}}}), http.StatusCreated)
	expectProblem(t, a.call("POST", "/v1/orders", mallory, "o-2", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "kbd", Qty: 1}}}),
		http.StatusUnprocessableEntity, "unpaid_limit_reached")
	st := as[server.StockJSON](t, a.call("GET", "/v1/products/kbd/stock", "", "", nil))
	assert.Equal(t, []int64{80, 20}, []int64{st.Available, st.Reserved})
	expect(t, a.call("POST", "/v1/orders", token(t, "alice", false), "o-1", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "kbd", Qty: 20}}}), http.StatusCreated)
}

// TestUnpaidLimitOnByDefault: the caps are on unless configured off, at the defaults the
// README and the flags' help give (commerce.DefaultMaxUnpaidPerProduct, ...Units): a server
// started with no setting of its own refuses the 21st unpaid unit of one product.
func TestUnpaidLimitOnByDefault(t *testing.T) {
	def := server.Defaults()
	assert.Equal(t, [2]int64{commerce.DefaultMaxUnpaidPerProduct, commerce.DefaultMaxUnpaidUnits},
		[2]int64{def.MaxUnpaidPerProduct, def.MaxUnpaidUnits})
	a := start(t, embedded, nil)
	setup(t, a, "kbd", 10_000, 100)
	mallory := token(t, "mallory", false)
	expect(t, a.call("POST", "/v1/orders", mallory, "o-1", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "kbd", Qty: 20}}}), http.StatusCreated)
	expectProblem(t, a.call("POST", "/v1/orders", mallory, "o-2", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "kbd", Qty: 1}}}),
		http.StatusUnprocessableEntity, "unpaid_limit_reached")
	st := as[server.StockJSON](t, a.call("GET", "/v1/products/kbd/stock", "", "", nil))
	assert.Equal(t, []int64{80, 20}, []int64{st.Available, st.Reserved})
}

// TestSetStockNeedsTheBuyerLimit: PUT /v1/products/{id}/stock replaces the product's stock
// setting, the on-hand count and the buyer limit. A body without buyer_limit is refused
// (400, field buyer_limit), and the limit stays: a restock that omitted it would otherwise
// lift a one-per-customer limit without a word. 0 still says "no limit", when it is written.
func TestSetStockNeedsTheBuyerLimit(t *testing.T) {
	a := start(t, embedded, nil)
	admin := setup(t, a, "p1", 9_000, 5)
	expect(t, a.call("PUT", "/v1/products/p1/stock", admin, "", server.SetStockJSON{OnHand: 5, BuyerLimit: 1}), http.StatusOK)

	p := expectProblem(t, a.call("PUT", "/v1/products/p1/stock", admin, "", `{"on_hand": 50}`), http.StatusBadRequest, "invalid_request")
	assert.Equal(t, "buyer_limit", p.Field)
	st := as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil))
	assert.Equal(t, []int64{5, 1}, []int64{st.OnHand, st.BuyerLimit}, "the setting is unchanged")

	st = as[server.StockJSON](t, expect(t, a.call("PUT", "/v1/products/p1/stock", admin, "", `{"on_hand": 50, "buyer_limit": 0}`), http.StatusOK))
	assert.Equal(t, []int64{50, 0}, []int64{st.OnHand, st.BuyerLimit}, "a limit of 0, written, lifts it")
}
