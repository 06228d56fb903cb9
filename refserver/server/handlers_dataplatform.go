package server

import (
	"net/http"
	"slices"
	"time"

	"github.com/commercekit/commercekit/commerce/dataplatform"
)

// DeliveryJSON is a paid order the data-platform notifier sends, as it tracks it.
type DeliveryJSON struct {
	// EventID is the order's payment-completed event: the Idempotency-Key of the POST.
	EventID string `json:"event_id"`
	OrderID string `json:"order_id"`
	// State is pending (queued or waiting to be tried again), sent, or dead (refused for
	// good, or failed at every attempt: an admin redrives it).
	State     string     `json:"state"`
	Attempts  int        `json:"attempts"`
	LastError string     `json:"last_error,omitempty"`
	SentAt    *time.Time `json:"sent_at,omitempty"`
}

// DeliveryPageJSON lists the notifier's deliveries, oldest first.
type DeliveryPageJSON struct {
	Deliveries []DeliveryJSON `json:"deliveries"`
}

// PlatformRedriveJSON is the outcome of a redrive of the notifier's dead deliveries.
type PlatformRedriveJSON struct {
	// Redriven is how many dead deliveries went back to the queue.
	Redriven int `json:"redriven"`
}

// platformDeliveries answers GET /v1/admin/dataplatform/deliveries?state=S&limit=N: up to
// N (1..500, default 500) of the notifier's deliveries in state S (pending, sent or dead;
// absent: all), oldest first.
func (s *Server) platformDeliveries(w http.ResponseWriter, r *http.Request) {
	n, ok := s.platformNotifier(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	if state != "" && !slices.Contains([]string{dataplatform.StatePending, dataplatform.StateSent, dataplatform.StateDead}, state) {
		s.writeError(w, r, malformed("state must be pending, sent or dead"))
		return
	}
	limit, err := limitParam(q, maxDeadLetters, maxDeadLetters)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ds, err := n.Deliveries(r.Context(), state, limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := DeliveryPageJSON{Deliveries: make([]DeliveryJSON, len(ds))}
	for i, d := range ds {
		out.Deliveries[i] = DeliveryJSON{EventID: d.EventID, OrderID: d.OrderID, State: d.State, Attempts: d.Attempts,
			LastError: d.LastError, SentAt: d.SentAt}
	}
	writeJSON(w, http.StatusOK, out)
}

// redrivePlatform answers POST /v1/admin/dataplatform/redrive: the notifier's dead
// deliveries go back to its queue with their attempts reset (dataplatform.Notifier.Redrive),
// and the answer says how many. Sent again, it redrives what has died since. The platform
// dedups each order by its event ID, so a redriven order is not recorded twice.
func (s *Server) redrivePlatform(w http.ResponseWriter, r *http.Request) {
	n, ok := s.platformNotifier(w, r)
	if !ok {
		return
	}
	redriven, err := n.Redrive(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, PlatformRedriveJSON{Redriven: redriven})
}

// platformNotifier returns the server's data-platform notifier, or answers 404
// dataplatform_not_configured when it runs none (no COMMERCEKIT_DATAPLATFORM_URL).
func (s *Server) platformNotifier(w http.ResponseWriter, r *http.Request) (*dataplatform.Notifier, bool) {
	if s.st.notifier == nil {
		writeProblem(w, r, newProblem(http.StatusNotFound, "dataplatform_not_configured", "Not Found",
			"this server sends orders to no data platform (COMMERCEKIT_DATAPLATFORM_URL is unset)"))
		return nil, false
	}
	return s.st.notifier, true
}
