package server_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/commercekit/commercekit/refserver/server"
)

// TestStockAdjustments: a restock over HTTP is an adjustment with its own ID, applied once
// however often it is sent. PUT stock sets an absolute count, so a setting sent again after
// a sale (a retry after a lost answer) puts the sold unit back on the shelf; an adjustment
// sent again after a sale changes nothing. The same ID with another delta is refused, a
// removal beyond what is available is refused, and both change nothing; only an admin
// adjusts.
func TestStockAdjustments(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			a := start(t, b, nil)
			admin := setup(t, a, "p1", 9000, 5)
			alice := token(t, "alice", false)
			adjust := func(tok string, body any) resp {
				return a.call("POST", "/v1/products/p1/stock/adjustments", tok, "", body)
			}
			stock := func() []int64 {
				st := as[server.StockJSON](t, expect(t, a.call("GET", "/v1/products/p1/stock", "", "", nil), http.StatusOK))
				return []int64{st.OnHand, st.Available, st.Reserved, st.Sold}
			}
			restock := map[string]any{"id": "restock-1", "delta": 3, "reason": "delivery"}

			st := as[server.StockJSON](t, expect(t, adjust(admin, restock), http.StatusOK))
			assert.Equal(t, []int64{8, 8}, []int64{st.OnHand, st.Available})
			o := as[server.OrderJSON](t, expect(t, a.call("POST", "/v1/orders", alice, "o1", server.PlaceOrderJSON{
				Lines: []server.LineJSON{{ProductID: "p1", Qty: 1}}}), http.StatusCreated))
			expect(t, a.call("POST", "/v1/orders/"+o.ID+"/pay", alice, "pay-1", server.PayJSON{Method: "CARD", Token: "tok_ok"}), http.StatusOK)
			assert.Equal(t, []int64{7, 7, 0, 1}, stock())

			st = as[server.StockJSON](t, expect(t, adjust(admin, restock), http.StatusOK))
			assert.Equal(t, []int64{7, 7, 0, 1}, []int64{st.OnHand, st.Available, st.Reserved, st.Sold}, "sent again: applied once")
			expectProblem(t, adjust(admin, map[string]any{"id": "restock-1", "delta": 4, "reason": "delivery"}),
				http.StatusUnprocessableEntity, "idempotency_key_reused")
			expectProblem(t, adjust(admin, map[string]any{"id": "loss-1", "delta": -8, "reason": "breakage"}),
				http.StatusUnprocessableEntity, "out_of_stock")
			expectProblem(t, adjust(admin, map[string]any{"id": "zero", "delta": 0, "reason": "none"}), http.StatusBadRequest, "invalid_request")
			expectProblem(t, adjust(admin, map[string]any{"delta": 1, "reason": "no id"}), http.StatusBadRequest, "invalid_request")
			expectProblem(t, adjust(admin, map[string]any{"id": "no-reason", "delta": 1}), http.StatusBadRequest, "invalid_request")
			expectProblem(t, adjust(alice, map[string]any{"id": "mine", "delta": 100, "reason": "mine"}), http.StatusForbidden, "forbidden")
			expectProblem(t, a.call("POST", "/v1/products/nope/stock/adjustments", admin, "", map[string]any{"id": "x", "delta": 1, "reason": "restock"}),
				http.StatusNotFound, "product_not_found")
			assert.Equal(t, []int64{7, 7, 0, 1}, stock(), "nothing refused changed the stock")

			st = as[server.StockJSON](t, expect(t, adjust(admin, map[string]any{"id": "loss-2", "delta": -2, "reason": "breakage"}), http.StatusOK))
			assert.Equal(t, []int64{5, 5, 0, 1}, []int64{st.OnHand, st.Available, st.Reserved, st.Sold})
		})
	}
}
