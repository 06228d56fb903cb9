package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/refserver/server"
)

// The tests of this file attack the server over HTTP as a hostile client would; each
// pins a defect found that way (or a probe that held up and no other test covers).

// TestNULInABodyIsABadRequest: a string with a NUL character cannot be stored (the SQL
// layer refuses it), so it is refused as input, 400, wherever it is sent — never a 500 —
// and nothing is written: the product and the template do not exist, the order is still
// unpaid, and the Idempotency-Key is free for a good request.
func TestNULInABodyIsABadRequest(t *testing.T) {
	a := start(t, embedded, nil)
	admin := setup(t, a, "p1", 9000, 5)
	alice := token(t, "alice", false)
	o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "order-1", server.PlaceOrderJSON{
		Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))

	for _, c := range []struct{ method, path, tok, key, body string }{
		{"POST", "/v1/orders/" + o.ID + "/pay", alice, "pay-1", `{"method":"CARD","token":"tok\u0000"}`},
		{"POST", "/v1/points/top-ups", alice, "top-1", `{"amount":1000,"method":"CARD","token":"tok\u0000"}`},
		{"POST", "/v1/products", admin, "", `{"id":"p2","name":"a\u0000b","price":100,"stock":1}`},
		{"POST", "/v1/coupon-templates", admin, "", `{"id":"t\u0000","name":"x","kind":"fixed","amount":100}`},
		{"POST", "/v1/coupon-templates", admin, "", `{"id":"t2","name":"a\u0000b","kind":"fixed","amount":100}`},
	} {
		p := expectProblem(t, a.call(c.method, c.path, c.tok, c.key, c.body), http.StatusBadRequest, "invalid_request")
		assert.NotEmpty(t, p.Field, "%s %s", c.method, c.path)
	}
	expectProblem(t, a.call("GET", "/v1/products/p2", "", "", nil), http.StatusNotFound, "product_not_found")
	expectProblem(t, a.call("POST", "/v1/coupon-templates/t2/issue", alice, "i", nil), http.StatusNotFound, "coupon_template_not_found")
	assert.Equal(t, "PENDING_PAYMENT", as[server.OrderJSON](t, a.call("GET", "/v1/orders/"+o.ID, alice, "", nil)).Status)
	assert.Zero(t, as[server.BalanceJSON](t, a.call("GET", "/v1/points", alice, "", nil)).Total)

	// The keys were not stored with the refusals.
	assert.Equal(t, "PAID", as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "pay-1",
		server.PayJSON{Method: "CARD", Token: "tok_visa"}), http.StatusOK)).Status)
	expect(t, a.call("POST", "/v1/points/top-ups", alice, "top-1", server.TopUpRequestJSON{Amount: 1000, Method: "CARD", Token: "tok_ok"}), http.StatusCreated)
	audit := as[server.AuditJSON](t, expect(t, a.call("GET", "/v1/admin/audit", admin, "", nil), http.StatusOK))
	assert.True(t, audit.OK, "%v", audit.Discrepancies)
}

// TestInvalidUTF8InABodyIsMalformed: encoding/json replaces each byte that is not UTF-8,
// and each \u escape of half a surrogate pair, by U+FFFD, so a password with one such
// byte signed up, and any other in its place logged in; names were stored other than
// sent. A body that is not UTF-8 is malformed, and nothing is written.
func TestInvalidUTF8InABodyIsMalformed(t *testing.T) {
	a := start(t, embedded, nil)
	admin := setup(t, a, "p1", 9000, 5)
	for _, c := range []struct{ path, tok, body string }{
		{"/v1/members", "", "{\"login_id\":\"mallory\",\"password\":\"secret\xffpass1\"}"},
		{"/v1/products", admin, "{\"id\":\"p2\",\"name\":\"bad\xfe\xffname\",\"price\":100,\"stock\":1}"},
		{"/v1/coupon-templates", admin, "{\"id\":\"t2\",\"name\":\"bad\xffname\",\"kind\":\"fixed\",\"amount\":100}"},
		{"/v1/members", "", `{"login_id":"mallory","password":"secret\ud800pass1"}`},
		{"/v1/members", "", `{"login_id":"mallory","password":"secret\udfffpass1"}`},
		{"/v1/members", "", `{"login_id":"mallory","password":"secret\ud800\u0041pass1"}`},
		{"/v1/products", admin, `{"id":"p2","name":"bad\udc00name","price":100,"stock":1}`},
	} {
		expectProblem(t, a.call("POST", c.path, c.tok, "", c.body), http.StatusBadRequest, "malformed_request")
	}
	expectProblem(t, a.call("POST", "/v1/sessions", "", "", "{\"login_id\":\"mallory\",\"password\":\"secret\xc0pass1\"}"),
		http.StatusBadRequest, "malformed_request")
	expectProblem(t, a.call("GET", "/v1/products/p2", "", "", nil), http.StatusNotFound, "product_not_found")
	expectProblem(t, a.call("POST", "/v1/coupon-templates/t2/issue", token(t, "alice", false), "i", nil),
		http.StatusNotFound, "coupon_template_not_found")
	expect(t, a.call("POST", "/v1/members", "", "", `{"login_id":"mallory","password":"secret\ufffdpass1"}`), http.StatusCreated)
	expect(t, a.call("POST", "/v1/products", admin, "", `{"id":"p2","name":"a \ud83d\ude00 and a \\ud800","price":100,"stock":1}`),
		http.StatusCreated) // a pair is a character; an escaped backslash no escape
}

// TestDuplicateNamesAreMalformed: encoding/json takes the last of two members with the same
// name (compared case-insensitively, "qty" and "QTY" alike), while the Idempotency-Key's
// fingerprint sorts the names case-sensitively: with duplicates accepted, two bodies that
// decode to different orders had the same fingerprint, and the second was answered with
// the first's order. A body repeating a name is malformed, so neither runs.
func TestDuplicateNamesAreMalformed(t *testing.T) {
	a := start(t, embedded, nil)
	setup(t, a, "p1", 9000, 10)
	bob := token(t, "bob", false)

	for _, body := range []string{
		`{"lines":[{"product_id":"p1","qty":1,"QTY":5}]}`, // decodes to 5 units
		`{"lines":[{"product_id":"p1","QTY":5,"qty":1}]}`, // decodes to 1 unit, same fingerprint
		`{"lines":[{"product_id":"p1","qty":1}],"lines":[{"product_id":"p1","qty":2}]}`,
		`{"lines":[{"product_id":"p1","qty":1,"Qty":1}]}`,
		`{"lines":[{"product_id":"p1","qty":1}],"points":0,"POINTS":0}`,
		"{\"lines\":[{\"product_id\":\"p1\",\"qty\":1}],\"points\":0,\"POIN\u017fTS\":0}", // ſ folds to s
	} {
		expectProblem(t, a.call("POST", "/v1/orders", bob, "dup-1", body), http.StatusBadRequest, "malformed_request")
	}
	assert.Empty(t, as[server.OrderPageJSON](t, a.call("GET", "/v1/orders", bob, "", nil)).Orders)
	assert.Equal(t, int64(10), as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil)).Available)

	// The same names in different objects are no duplicates.
	o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", bob, "dup-1",
		`{"lines":[{"product_id":"p1","qty":1},{"product_id":"p1","qty":2}]}`), http.StatusCreated))
	assert.Equal(t, int64(27000), o.Subtotal)
}

// TestLocationIsTheResource: a product ID may hold characters that mean something in a URL
// ('?', '#', '%', '/'); the Location of its 201 must still name it, escaped, so following
// it reads the product created; an ID no URL can name ("..") is refused. A member has no
// resource of its own to point to.
func TestLocationIsTheResource(t *testing.T) {
	a := start(t, embedded, nil)
	admin := token(t, "admin", true)
	for _, id := range []string{"a?b", "c#d", "e%25f", "g/h"} {
		r := expect(t, a.call("POST", "/v1/products", admin, "", server.NewProductJSON{ID: id, Name: "x", Price: 100, Stock: 1}), http.StatusCreated)
		loc := r.Header.Get("Location")
		require.NotEmpty(t, loc, id)
		got := as[server.ProductJSON](t, expect(t, a.call("GET", loc, "", "", nil), http.StatusOK))
		assert.Equal(t, id, got.ID, "Location %q", loc)
	}
	// "." and ".." are no path segment (a client or proxy removes them, escaped or not);
	// a coupon template's ID names it in /v1/coupon-templates/{id}/issue just the same.
	for _, id := range []string{".", "..", "a b", "쿠폰"} {
		p := expectProblem(t, a.call("POST", "/v1/products", admin, "", server.NewProductJSON{ID: id, Name: "x", Price: 100, Stock: 1}),
			http.StatusBadRequest, "invalid_request")
		assert.Equal(t, "id", p.Field)
		p = expectProblem(t, a.call("POST", "/v1/coupon-templates", admin, "", server.CouponTemplateJSON{ID: id, Kind: "fixed", Amount: 100}),
			http.StatusBadRequest, "invalid_request")
		assert.Equal(t, "id", p.Field, "template %q", id)
	}

	r := expect(t, a.call("POST", "/v1/members", "", "", server.SignUpJSON{LoginID: "alice", Password: "correct horse"}), http.StatusCreated)
	if loc := r.Header.Get("Location"); loc != "" {
		assert.NotEqual(t, http.StatusNotFound, a.call("GET", loc, "", "", nil).Status, "Location %q names nothing", loc)
	}
}

// TestOrderStatusFilterIsChecked: a status filter the server does not know ("paid" for
// "PAID", a typo) is a 400 naming the parameter, as the coupons' state filter is — not an
// empty list that says the caller has no such orders.
func TestOrderStatusFilterIsChecked(t *testing.T) {
	a := start(t, embedded, nil)
	setup(t, a, "p1", 9000, 5)
	alice := token(t, "alice", false)
	expect(t, a.call("POST", "/v1/orders", alice, "o-1", server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated)

	for _, status := range []string{"paid", "BOGUS", "PENDING_PAYMENT%00"} {
		p := expectProblem(t, a.call("GET", "/v1/orders?status="+status, alice, "", nil), http.StatusBadRequest, "invalid_request")
		assert.Equal(t, "status", p.Field)
	}
	expectProblem(t, a.call("GET", "/v1/coupons?state=bogus", alice, "", nil), http.StatusBadRequest, "invalid_request")
	assert.Len(t, as[server.OrderPageJSON](t, expect(t, a.call("GET", "/v1/orders?status=PENDING_PAYMENT", alice, "", nil), http.StatusOK)).Orders, 1)
	assert.Empty(t, as[server.OrderPageJSON](t, expect(t, a.call("GET", "/v1/orders?status=PAID", alice, "", nil), http.StatusOK)).Orders)
	assert.Len(t, as[server.OrderPageJSON](t, expect(t, a.call("GET", "/v1/orders?status=", alice, "", nil), http.StatusOK)).Orders, 1)
}

// TestProductExistsIsNotAKeyReused: creating a product again with other terms is refused,
// 422, with a code saying so — not idempotency_key_reused, on a route that takes no key.
func TestProductExistsIsNotAKeyReused(t *testing.T) {
	a := start(t, embedded, nil)
	admin := setup(t, a, "p1", 9000, 5)
	expectProblem(t, a.call("POST", "/v1/products", admin, "", server.NewProductJSON{ID: "p1", Name: "Product p1", Price: 1, Stock: 5}),
		http.StatusUnprocessableEntity, "product_exists")
	expectProblem(t, a.call("POST", "/v1/coupon-templates", admin, "", server.CouponTemplateJSON{ID: "tpl-p1",
		Name: "other", Kind: "fixed", Amount: 2000}), http.StatusUnprocessableEntity, "coupon_template_exists")
	assert.Equal(t, int64(9000), as[server.ProductJSON](t, a.call("GET", "/v1/products/p1", "", "", nil)).Price)
}

// TestMetricsLabelsAreBounded: the latency histogram is labelled by route pattern, method
// and status; a client choosing the method (any token is one: "XYZZY1", "XYZZY2", ...)
// must not choose the series, or each request could add 17 to the registry for ever. A
// method HTTP does not define is counted as "other".
func TestMetricsLabelsAreBounded(t *testing.T) {
	a := start(t, embedded, nil)
	for _, m := range []string{"XYZZY1", "XYZZY2", "get"} {
		for _, path := range []string{"/v1/orders", "/nowhere"} {
			r, err := a.send(m, path, "", nil, nil)
			require.NoError(t, err)
			assert.Contains(t, []int{http.StatusNotFound, http.StatusMethodNotAllowed}, r.Status, "%s %s", m, path)
		}
	}
	var counts []string
	for line := range strings.Lines(string(expect(t, a.call("GET", "/metrics", token(t, "ops", true), "", nil), http.StatusOK).Body)) {
		if strings.HasPrefix(line, "commercekit_http_request_duration_seconds_count{") {
			counts = append(counts, strings.TrimSpace(line))
		}
	}
	assert.Equal(t, []string{
		`commercekit_http_request_duration_seconds_count{method="other",route="unmatched",status="404"} 3`,
		`commercekit_http_request_duration_seconds_count{method="other",route="unmatched",status="405"} 3`,
	}, counts)
}

// TestCursorWithANUL: the products' cursor is a product ID that reached SQL unchecked, so a
// NUL in it was a 500 on a public route. Every list's cursor is printable ASCII as the
// server writes it; any other is a 400.
func TestCursorWithANUL(t *testing.T) {
	a := start(t, embedded, nil)
	setup(t, a, "p1", 9000, 5)
	alice := token(t, "alice", false)
	for _, path := range []string{"/v1/products", "/v1/orders", "/v1/coupons", "/v1/points/history"} {
		for _, cursor := range []string{"%00", "a%00b", "a%20b", "%ED%95%9C"} {
			r := a.call("GET", path+"?cursor="+cursor, alice, "", nil)
			require.Equal(t, http.StatusBadRequest, r.Status, "%s?cursor=%s: %s", path, cursor, r.Body)
		}
	}
	page := as[server.ProductPageJSON](t, expect(t, a.call("GET", "/v1/products?cursor=p0", "", "", nil), http.StatusOK))
	require.Len(t, page.Products, 1)
}

// TestPathIDWithANUL: a template's or a dead letter's ID in the path reached SQL unchecked,
// so a NUL in it was a 500. A template ID with one is a 400 (no template can have it), a
// dead letter's a 404 (the relay takes any ID, and no dead letter has it).
func TestPathIDWithANUL(t *testing.T) {
	a := start(t, embedded, nil)
	admin := setup(t, a, "p1", 9000, 5)
	alice := token(t, "alice", false)
	p := expectProblem(t, a.call("POST", "/v1/coupon-templates/a%00b/issue", alice, "i-1", nil), http.StatusBadRequest, "invalid_request")
	assert.Equal(t, "id", p.Field)
	for _, action := range []string{"redrive", "skip"} {
		expectProblem(t, a.call("POST", "/v1/admin/outbox/dead-letters/a%00b/"+action, admin, "", nil), http.StatusNotFound, "not_dead_letter")
	}
	expect(t, a.call("POST", "/v1/coupon-templates/tpl-p1/issue", alice, "i-1", nil), http.StatusCreated)
}

// TestSourceDocumentRules (held up): the rules of the source documents hold over HTTP, each
// refusal a 4xx that changes nothing — a coupon never pays alone, a composite payment needs
// CARD as its main method, BNPL pays alone and from 10,000 won, an order has at most 50
// lines and 999 units of a product, and a paid order is cancelled within the cancel window
// only.
func TestSourceDocumentRules(t *testing.T) {
	a := start(t, embedded, func(c *server.Config) { c.CancelWindow = 1 /* ns: every paid order is past it */ })
	admin := setup(t, a, "p1", 9000, 100)
	expect(t, a.call("POST", "/v1/coupon-templates", admin, "", server.CouponTemplateJSON{ID: "all", Name: "all off",
		Kind: "fixed", Amount: 20000, PerUserLimit: 5}), http.StatusCreated)
	alice := token(t, "alice", false)
	one := []server.LineJSON{{ProductID: "p1", Qty: 1}}
	expect(t, a.call("POST", "/v1/points/top-ups", alice, "top", server.TopUpRequestJSON{Amount: 20000, Method: "CARD", Token: "tok_ok"}), http.StatusCreated)
	big := as[server.CouponJSON](t, expect(t, a.call("POST", "/v1/coupon-templates/all/issue", alice, "c1", nil), http.StatusCreated))
	small := as[server.CouponJSON](t, expect(t, a.call("POST", "/v1/coupon-templates/tpl-p1/issue", alice, "c2", nil), http.StatusCreated))

	expectProblem(t, a.call("POST", "/v1/orders", alice, "coupon-alone", server.PlaceOrderJSON{Lines: one, CouponID: big.ID}),
		http.StatusUnprocessableEntity, "payment_rule_violated")
	expectProblem(t, a.call("POST", "/v1/orders", alice, "coupon-points", server.PlaceOrderJSON{Lines: one, CouponID: small.ID, Points: 8000}),
		http.StatusUnprocessableEntity, "payment_rule_violated")
	expectProblem(t, a.call("POST", "/v1/orders", alice, "coupon-points-now", server.PlaceOrderJSON{Lines: one, CouponID: small.ID,
		Points: 8000, PayWithPoints: true}), http.StatusBadRequest, "invalid_request")
	for key, lines := range map[string][]server.LineJSON{
		"51-lines":  make([]server.LineJSON, 51),
		"1000-qty":  {{ProductID: "p1", Qty: 1000}},
		"999+1-qty": {{ProductID: "p1", Qty: 999}, {ProductID: "p1", Qty: 1}},
	} {
		for i := range lines {
			if lines[i].ProductID == "" {
				lines[i] = server.LineJSON{ProductID: "p1", Qty: 1}
			}
		}
		expectProblem(t, a.call("POST", "/v1/orders", alice, key, server.PlaceOrderJSON{Lines: lines}), http.StatusBadRequest, "invalid_request")
	}
	withPoints := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "o-bnpl", server.PlaceOrderJSON{
		Lines: []server.LineJSON{{ProductID: "p1", Qty: 2}}, Points: 1000}), http.StatusCreated))
	expectProblem(t, a.call("POST", "/v1/orders/"+withPoints.ID+"/pay", alice, "p-bnpl", server.PayJSON{Method: "BNPL", Token: "tok_ok"}),
		http.StatusUnprocessableEntity, "payment_rule_violated")
	cheap := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "o-cheap", server.PlaceOrderJSON{Lines: one}), http.StatusCreated))
	expectProblem(t, a.call("POST", "/v1/orders/"+cheap.ID+"/pay", alice, "p-cheap", server.PayJSON{Method: "BNPL", Token: "tok_ok"}),
		http.StatusUnprocessableEntity, "payment_rule_violated")

	// Paid by card, then out of its cancel window.
	paid := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders/"+cheap.ID+"/pay", alice, "p-card", server.PayJSON{Method: "CARD", Token: "tok_visa"}), http.StatusOK))
	require.Equal(t, "PAID", paid.Status)
	expectProblem(t, a.call("POST", "/v1/orders/"+paid.ID+"/cancel", alice, "", nil), http.StatusUnprocessableEntity, "cancel_window_closed")
	assert.Equal(t, "PAID", as[server.OrderJSON](t, a.call("GET", "/v1/orders/"+paid.ID, alice, "", nil)).Status)
	expect(t, a.call("POST", "/v1/orders/"+withPoints.ID+"/cancel", alice, "", nil), http.StatusOK)

	assert.Empty(t, as[server.OrderPageJSON](t, a.call("GET", "/v1/orders?status=PENDING_PAYMENT", alice, "", nil)).Orders)
	assert.Len(t, as[server.CouponPageJSON](t, a.call("GET", "/v1/coupons?state=available", alice, "", nil)).Coupons, 2)
	assert.Equal(t, int64(20000+paid.Reward), as[server.BalanceJSON](t, a.call("GET", "/v1/points", alice, "", nil)).Available)
	assert.Equal(t, int64(99), as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil)).Available)
	audit := as[server.AuditJSON](t, expect(t, a.call("GET", "/v1/admin/audit", admin, "", nil), http.StatusOK))
	assert.True(t, audit.OK, "%v", audit.Discrepancies)
}

// TestRequiredMembersMustBeGiven: encoding/json takes a member missing or null as its
// zero value, so PUT /v1/products/{id}/stock with {} set the stock to 0. The members the
// OpenAPI document requires must be given, not null (in any case encoding/json matches),
// and a body without them changes nothing.
func TestRequiredMembersMustBeGiven(t *testing.T) {
	a := start(t, embedded, nil)
	admin := setup(t, a, "p1", 9000, 5)
	bob := token(t, "bob", false)
	expect(t, a.call("POST", "/v1/cart/items", bob, "add-1", `{"product_id":"p1","qty":2}`), http.StatusOK)
	for _, c := range []struct{ method, path, tok, body, field string }{
		{"PUT", "/v1/products/p1/stock", admin, `{}`, "on_hand"},
		{"PUT", "/v1/products/p1/stock", admin, `{"on_hand":null}`, "on_hand"},
		{"PUT", "/v1/products/p1/stock", admin, `{"buyer_limit":2}`, "on_hand"},
		{"PUT", "/v1/products/p1/price", admin, `{"price":null}`, "price"},
		{"PUT", "/v1/cart/items/p1", bob, `{}`, "qty"},
	} {
		p := expectProblem(t, a.call(c.method, c.path, c.tok, "", c.body), http.StatusBadRequest, "invalid_request")
		assert.Equal(t, c.field, p.Field, "%s %s %s", c.method, c.path, c.body)
	}
	st := as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil))
	assert.Equal(t, int64(5), st.OnHand, "the stock is as it was")
	assert.Equal(t, int64(9000), as[server.ProductJSON](t, a.call("GET", "/v1/products/p1", "", "", nil)).Price)
	assert.Equal(t, int64(2), as[server.CartJSON](t, a.call("GET", "/v1/cart", bob, "", nil)).Items[0].Qty)

	st = as[server.StockJSON](t, expect(t, a.call("PUT", "/v1/products/p1/stock", admin, "", `{"ON_HAND":0,"Buyer_Limit":0}`), http.StatusOK))
	assert.Zero(t, st.OnHand, "given, in another case, 0 is taken")
}

// TestOutOfRangeStockNamesItsField: a stock or buyer limit out of range is 400
// invalid_request whose field is the member as the API spells it (on_hand, buyer_limit,
// stock), as a missing one's is, not the inventory's words ("on hand", "buyer limit") nor
// another member; and it changes nothing.
func TestOutOfRangeStockNamesItsField(t *testing.T) {
	a := start(t, embedded, nil)
	admin := setup(t, a, "p1", 9000, 5)
	for _, c := range []struct{ method, path, body, field string }{
		{"PUT", "/v1/products/p1/stock", `{"on_hand":-1,"buyer_limit":0}`, "on_hand"},
		{"PUT", "/v1/products/p1/stock", `{"on_hand":5,"buyer_limit":-1}`, "buyer_limit"},
		{"POST", "/v1/products", `{"id":"p2","name":"P2","price":100,"stock":1,"buyer_limit":-1}`, "buyer_limit"},
		{"POST", "/v1/products", `{"id":"p2","name":"P2","price":100,"stock":1,"buyer_limit":1000000000001}`, "buyer_limit"},
		{"POST", "/v1/products", `{"id":"p2","name":"P2","price":100,"stock":-1}`, "stock"},
	} {
		p := expectProblem(t, a.call(c.method, c.path, admin, "", c.body), http.StatusBadRequest, "invalid_request")
		assert.Equal(t, c.field, p.Field, "%s %s %s", c.method, c.path, c.body)
	}
	st := as[server.StockJSON](t, a.call("GET", "/v1/products/p1/stock", "", "", nil))
	assert.Equal(t, []int64{5, 0}, []int64{st.OnHand, st.BuyerLimit}, "the stock is as it was")
	expectProblem(t, a.call("GET", "/v1/products/p2", "", "", nil), http.StatusNotFound, "product_not_found")
}
