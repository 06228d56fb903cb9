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
