package server

import (
	"fmt"
	"net/http"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

func (s *Server) placeOrder(w http.ResponseWriter, r *http.Request) {
	var in PlaceOrderJSON
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	var o commerce.Order
	var err error
	if in.FromCart {
		o, err = s.checkoutCart(r, in)
	} else {
		lines := make([]commerce.Line, len(in.Lines))
		for i, l := range in.Lines {
			lines[i] = commerce.Line{ProductID: l.ProductID, Qty: l.Qty}
		}
		o, err = s.svc.PlaceOrder(r.Context(), commerce.PlaceOrderRequest{
			UserID: principal(r.Context()).UserID, Lines: lines, CouponID: in.CouponID, Points: in.Points,
			IdempotencyKey: r.Header.Get(IdempotencyKeyHeader), PayWithPoints: in.PayWithPoints,
		})
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/orders/"+o.ID)
	writeJSON(w, http.StatusCreated, orderJSON(o))
}

func (s *Server) listOrders(w http.ResponseWriter, r *http.Request) {
	cursor, limit, err := pageParams(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := commerce.Status(r.URL.Query().Get("status"))
	if status != "" && !status.Valid() { // a typo ("paid") is refused, not an empty list
		s.writeError(w, r, errcode.Invalid("status", fmt.Sprintf("is not one of %v", commerce.Statuses)))
		return
	}
	page, err := s.svc.ListOrders(r.Context(), principal(r.Context()).UserID, commerce.OrderQuery{
		Status: status, Limit: limit, Cursor: cursor})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := OrderPageJSON{Orders: make([]OrderJSON, len(page.Orders)), NextCursor: page.Next}
	for i, o := range page.Orders {
		out.Orders[i] = orderJSON(o)
	}
	writeJSON(w, http.StatusOK, out)
}

// actor is the caller as commerce sees it: an admin acts on any order.
func actor(r *http.Request) commerce.Actor {
	p := principal(r.Context())
	return commerce.Actor{UserID: p.UserID, Admin: p.Admin}
}

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) {
	o, err := s.svc.GetOrder(r.Context(), r.PathValue("id"), actor(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, orderJSON(o))
}

// getOrderPayment answers the payment of one of the caller's orders, with its history and
// refunds; 404 payment_not_found when nothing went through the PG (not paid yet, or paid
// by points alone).
func (s *Server) getOrderPayment(w http.ResponseWriter, r *http.Request) {
	p, err := s.svc.OrderPayment(r.Context(), r.PathValue("id"), actor(r))
	s.writePayment(w, r, p, err)
}

// writePayment answers a payment record, or a problem for an error.
func (s *Server) writePayment(w http.ResponseWriter, r *http.Request, p commerce.PaymentRecord, err error) {
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, paymentJSON(p))
}

// payOrder answers the order as the payment left it: 200 when settled (PAID, or
// PAYMENT_FAILED with the PG's decline code in failure_code), 202 while the PG's answer is
// not known (PAYING: poll the order; the reconciler settles it).
func (s *Server) payOrder(w http.ResponseWriter, r *http.Request) {
	var in PayJSON
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	o, err := s.svc.Pay(r.Context(), commerce.PayRequest{
		OrderID: r.PathValue("id"), UserID: principal(r.Context()).UserID,
		Method: payment.Method(in.Method), Token: in.Token, IdempotencyKey: r.Header.Get(IdempotencyKeyHeader),
	})
	s.writeOrderOutcome(w, r, o, err)
}

// cancelOrder cancels an order: at once when unpaid; a paid one (within the cancel window)
// is refunded. 202 while the refund is with the PG.
func (s *Server) cancelOrder(w http.ResponseWriter, r *http.Request) {
	o, err := s.svc.Cancel(r.Context(), r.PathValue("id"), actor(r))
	s.writeOrderOutcome(w, r, o, err)
}

// writeOrderOutcome answers an order a flow left: 202 when it waits for the PG, 200 when
// settled, a problem for an error.
func (s *Server) writeOrderOutcome(w http.ResponseWriter, r *http.Request, o commerce.Order, err error) {
	switch {
	case err != nil:
		s.writeError(w, r, err)
	case o.Status == commerce.StatusPaying || o.Status == commerce.StatusCancelling:
		writeJSON(w, http.StatusAccepted, orderJSON(o))
	default:
		writeJSON(w, http.StatusOK, orderJSON(o))
	}
}

// paymentWebhook receives the PG's signed notifications. 200 once recorded (also for a
// repeat); 400 for a bad signature or body; 5xx makes the PG deliver it again.
func (s *Server) paymentWebhook(w http.ResponseWriter, r *http.Request) {
	body, err := readAll(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.svc.HandlePaymentWebhook(r.Context(), body, r.Header.Get(pgsim.SignatureHeader)); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "recorded"})
}
