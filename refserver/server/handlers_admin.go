package server

import "net/http"

// audit runs commerce's invariant audit over the whole store (expensive: admin only).
func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	rep, err := s.svc.Audit(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := AuditJSON{OK: rep.OK(), Orders: rep.Orders, Products: rep.Products, TopUps: rep.TopUps,
		Discrepancies: make([]string, len(rep.Discrepancies))}
	for i, d := range rep.Discrepancies {
		out.Discrepancies[i] = d.String()
	}
	writeJSON(w, http.StatusOK, out)
}

// resolvePaymentReview answers POST /v1/admin/payments/{id}/resolve-review: the payment's
// record once whatever the PG holds of a payment in REVIEW is given back (see
// commerce.Service.ResolvePaymentReview); 409 when its order or top-up is fulfilled by it or
// it is not under review, 503 while the PG cannot be asked or has not confirmed the refund
// (retrying is harmless).
func (s *Server) resolvePaymentReview(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := checkPathID(id); err != nil {
		s.writeError(w, r, err)
		return
	}
	p, err := s.svc.ResolvePaymentReview(r.Context(), id)
	s.writePayment(w, r, p, err)
}
