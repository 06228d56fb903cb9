package server_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/commercekit/commercekit/refserver/server"
)

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
