package server

import (
	"net/http"
	"time"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
)

// CartItemJSON is a line of the caller's cart with the product's current name, price and
// availability (nothing is reserved until the cart is ordered).
type CartItemJSON struct {
	ProductID string    `json:"product_id"`
	Qty       int64     `json:"qty"`
	Name      string    `json:"name"`
	UnitPrice int64     `json:"unit_price"`
	Amount    int64     `json:"amount"`
	Available int64     `json:"available"`
	InStock   bool      `json:"in_stock"`
	AddedAt   time.Time `json:"added_at"`
}

// CartJSON is the caller's cart.
type CartJSON struct {
	Items    []CartItemJSON `json:"items"`
	Subtotal int64          `json:"subtotal"`
}

// CartQtyJSON sets a cart line's quantity.
type CartQtyJSON struct {
	Qty int64 `json:"qty"`
}

func cartJSON(c cart.Cart) CartJSON {
	out := CartJSON{Items: make([]CartItemJSON, len(c.Items)), Subtotal: c.Subtotal}
	for i, it := range c.Items {
		out.Items[i] = CartItemJSON{ProductID: it.ProductID, Qty: it.Qty, Name: it.Name, UnitPrice: it.UnitPrice,
			Amount: it.Amount, Available: it.Available, InStock: it.InStock, AddedAt: it.AddedAt}
	}
	return out
}

// writeCart answers a cart, or the error that came instead.
func (s *Server) writeCart(w http.ResponseWriter, r *http.Request, c cart.Cart, err error) {
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cartJSON(c))
}

func (s *Server) getCart(w http.ResponseWriter, r *http.Request) {
	c, err := s.carts.Get(r.Context(), principal(r.Context()).UserID)
	s.writeCart(w, r, c, err)
}

// addToCart adds units of a product to the caller's cart once per Idempotency-Key: the
// cart records the key with the addition (AddOnce), so a retry adds nothing even when the
// stored response is gone (a crash between the commit and storing it, or a key older than
// the idempotency store keeps).
func (s *Server) addToCart(w http.ResponseWriter, r *http.Request) {
	var in LineJSON
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	c, err := s.carts.AddOnce(r.Context(), principal(r.Context()).UserID, in.ProductID, in.Qty, r.Header.Get(IdempotencyKeyHeader))
	s.writeCart(w, r, c, err)
}

func (s *Server) setCartQty(w http.ResponseWriter, r *http.Request) {
	var in CartQtyJSON
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	c, err := s.carts.SetQty(r.Context(), principal(r.Context()).UserID, r.PathValue("product_id"), in.Qty)
	s.writeCart(w, r, c, err)
}

func (s *Server) removeFromCart(w http.ResponseWriter, r *http.Request) {
	c, err := s.carts.Remove(r.Context(), principal(r.Context()).UserID, r.PathValue("product_id"))
	s.writeCart(w, r, c, err)
}

// checkoutCart places the order of POST /v1/orders with from_cart: the caller's cart,
// emptied in the order's transaction, idempotent on the Idempotency-Key.
func (s *Server) checkoutCart(r *http.Request, in PlaceOrderJSON) (commerce.Order, error) {
	if len(in.Lines) > 0 {
		return commerce.Order{}, malformed("an order from the cart takes no lines")
	}
	return s.carts.Checkout(r.Context(), cart.CheckoutRequest{UserID: principal(r.Context()).UserID,
		IdempotencyKey: r.Header.Get(IdempotencyKeyHeader), CouponID: in.CouponID, Points: in.Points,
		PayWithPoints: in.PayWithPoints})
}
