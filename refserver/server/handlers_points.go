package server

import (
	"net/http"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/payment"
)

func (s *Server) getPoints(w http.ResponseWriter, r *http.Request) {
	b, err := s.svc.Points(r.Context(), principal(r.Context()).UserID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, balanceJSON(b))
}

func (s *Server) pointHistory(w http.ResponseWriter, r *http.Request) {
	cursor, limit, err := pageParams(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page, err := s.svc.PointHistory(r.Context(), principal(r.Context()).UserID, cursor, limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := HistoryPageJSON{Entries: make([]EntryJSON, len(page.Entries)), NextCursor: page.Next}
	for i, e := range page.Entries {
		out.Entries[i] = EntryJSON{ID: e.ID, Type: string(e.Type), Amount: e.Amount, Change: e.Change,
			Balance: balanceJSON(e.Balance), Reference: e.Reference, Reason: e.Reason, Time: e.Time}
	}
	writeJSON(w, http.StatusOK, out)
}

// topUp buys points: 201 when settled (COMPLETED or FAILED), 202 while the PG's answer is
// not known.
func (s *Server) topUp(w http.ResponseWriter, r *http.Request) {
	var in TopUpRequestJSON
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	t, err := s.svc.TopUp(r.Context(), commerce.TopUpRequest{UserID: principal(r.Context()).UserID, Amount: in.Amount,
		Method: payment.Method(in.Method), Token: in.Token, IdempotencyKey: r.Header.Get(IdempotencyKeyHeader)})
	switch {
	case err != nil:
		s.writeError(w, r, err)
	case t.Status == commerce.TopUpPaying:
		w.Header().Set("Location", "/v1/points/top-ups/"+t.ID)
		writeJSON(w, http.StatusAccepted, topUpJSON(t))
	default:
		w.Header().Set("Location", "/v1/points/top-ups/"+t.ID)
		writeJSON(w, http.StatusCreated, topUpJSON(t))
	}
}

// getTopUpPayment answers the payment of one of the caller's top-ups, with its history
// and refunds.
func (s *Server) getTopUpPayment(w http.ResponseWriter, r *http.Request) {
	p, err := s.svc.TopUpPayment(r.Context(), r.PathValue("id"), actor(r))
	s.writePayment(w, r, p, err)
}

func (s *Server) getTopUp(w http.ResponseWriter, r *http.Request) {
	t, err := s.svc.GetTopUp(r.Context(), r.PathValue("id"), actor(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, topUpJSON(t))
}
