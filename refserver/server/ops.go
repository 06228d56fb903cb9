package server

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/commercekit/commercekit/errcode"
)

// check is one readiness probe of a backend.
type check struct {
	name string
	fn   func(ctx context.Context) error
	// degrades: the backend is on no request's path but some (the PG: paying; Kafka:
	// none, events wait in the outbox), so its failure leaves the server degraded, still
	// ready: pulling every instance out of a load balancer for it would turn the outage of
	// a few routes into the outage of all of them.
	degrades bool
}

// readyTimeout bounds each readiness probe.
const readyTimeout = 2 * time.Second

// checkFailed is what /readyz says of a check that failed; its error goes to the log.
const checkFailed = "unavailable"

// Readiness is the body of /readyz: "ready", "degraded" (a backend on no request's path, or
// on few, is down: the PG, Kafka; still 200) or "unavailable" (503), and each backend's
// result: "ok" or checkFailed. /readyz is public, so the error of a failing check (a
// backend's address, the PG's URL, a driver's message) is logged, never answered.
type Readiness struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// handleHealthz answers 200 while the process runs.
func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReadyz pings every backend concurrently and answers 200 when all answer, or when
// only backends that merely degrade the server (see check) do not ("degraded"), else 503;
// also 503 while the server drains for shutdown, so a load balancer stops sending traffic.
// A 503 carries Retry-After, as every dependency_unavailable answer does.
// A failing check's error is logged (WARN, with the check's name), not answered.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	res := Readiness{Status: "ready", Checks: make(map[string]string, len(s.checks))}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range s.checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			defer cancel()
			msg := "ok"
			if err := c.fn(ctx); err != nil {
				msg = checkFailed
				s.log.WarnContext(r.Context(), "readiness check failed", "check", c.name, "error", err.Error())
			}
			mu.Lock()
			res.Checks[c.name] = msg
			mu.Unlock()
		})
	}
	wg.Wait()
	status := http.StatusOK
	for _, c := range s.checks {
		switch {
		case res.Checks[c.name] == "ok":
		case c.degrades:
			res.Status = "degraded"
		default:
			status = http.StatusServiceUnavailable
		}
	}
	if s.draining.Load() {
		res.Checks["server"] = "shutting down"
		status = http.StatusServiceUnavailable
	}
	if status != http.StatusOK {
		res.Status = "unavailable"
		w.Header().Set("Retry-After", strconv.Itoa(codeRules[errcode.DependencyUnavailable].retryAfter))
	}
	writeJSON(w, status, res)
}
