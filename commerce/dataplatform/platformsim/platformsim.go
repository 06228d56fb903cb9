// Package platformsim is a mock data platform for development and tests (seed 001's
// "Mock API"): an http.Handler that records every order POSTed to it, with fault
// injection — down (connections dropped), slow (a latency after the order is recorded, so
// a client that times out retries an order the platform already has), and 5xx answers.
//
//	POST /v1/orders      record the body with its Idempotency-Key; 202
//	GET  /v1/orders      what was received, in order (JSON)
//	GET  /admin/faults   the current faults (JSON)
//	PUT  /admin/faults   set them: {"down": true, "latency": "3s", "errorRate": 0.5}
//
// `refserver dataplatform` serves it on a loopback address.
package platformsim

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Received is one POST the platform accepted.
type Received struct {
	IdempotencyKey string          `json:"idempotencyKey"`
	EventType      string          `json:"eventType"`
	Body           json.RawMessage `json:"body"`
	At             time.Time       `json:"at"`
}

// Faults are the failures the platform injects.
type Faults struct {
	// Down drops every connection without an answer.
	Down bool `json:"down"`
	// Latency delays every answer (after the order is recorded).
	Latency Duration `json:"latency"`
	// ErrorRate is the fraction (0..1) of POSTs answered 500 without being recorded.
	ErrorRate float64 `json:"errorRate"`
}

// Duration is a time.Duration that reads and writes JSON as "1.5s".
type Duration time.Duration

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("platformsim: latency %q is not a non-negative duration", s)
	}
	*d = Duration(v)
	return nil
}

// Platform is the mock data platform. It is safe for concurrent use.
type Platform struct {
	mu       sync.Mutex
	received []Received
	faults   Faults
}

// New returns a platform without faults.
func New() *Platform { return &Platform{} }

// SetFaults replaces the injected faults.
func (p *Platform) SetFaults(f Faults) {
	p.mu.Lock()
	p.faults = f
	p.mu.Unlock()
}

// Faults returns the injected faults.
func (p *Platform) Faults() Faults {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

// Received returns a copy of what was received, in order.
func (p *Platform) Received() []Received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Received(nil), p.received...)
}

// ServeHTTP serves the routes of the package documentation.
func (p *Platform) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v1/orders" && r.Method == http.MethodPost:
		p.post(w, r)
	case r.URL.Path == "/v1/orders" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, p.Received())
	case r.URL.Path == "/admin/faults" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, p.Faults())
	case r.URL.Path == "/admin/faults" && r.Method == http.MethodPut:
		var f Faults
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&f); err != nil || f.ErrorRate < 0 || f.ErrorRate > 1 {
			http.Error(w, "want {\"down\": bool, \"latency\": \"1s\", \"errorRate\": 0..1}", http.StatusBadRequest)
			return
		}
		p.SetFaults(f)
		writeJSON(w, http.StatusOK, f)
	default:
		http.NotFound(w, r)
	}
}

func (p *Platform) post(w http.ResponseWriter, r *http.Request) {
	f := p.Faults()
	if f.Down {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if f.ErrorRate > 0 && rand.Float64() < f.ErrorRate {
		http.Error(w, "injected failure", http.StatusInternalServerError)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || !json.Valid(body) {
		http.Error(w, "the body must be a JSON document", http.StatusBadRequest)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		http.Error(w, "Idempotency-Key is required", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.received = append(p.received, Received{IdempotencyKey: key, EventType: r.Header.Get("X-Event-Type"), Body: body, At: time.Now().UTC()})
	p.mu.Unlock()
	if f.Latency > 0 {
		select {
		case <-time.After(time.Duration(f.Latency)):
		case <-r.Context().Done():
			return
		}
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"idempotencyKey": key})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
