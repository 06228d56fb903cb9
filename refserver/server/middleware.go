package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"
)

// RequestIDHeader carries the request ID in and out.
const RequestIDHeader = "X-Request-ID"

// maxRequestIDLen bounds a client-supplied request ID; a longer or non-printable one is
// replaced by a fresh ID.
const maxRequestIDLen = 128

// unmatchedRoute labels requests no route matched (404, 405).
const unmatchedRoute = "unmatched"

// reqInfo travels in the request's context: the request ID, and the route pattern that the
// matched route's handler records, for the outer middleware's log line and metrics.
type reqInfo struct {
	id    string
	route string
	user  string
}

type reqInfoKey struct{}

func infoOf(ctx context.Context) *reqInfo {
	if i, ok := ctx.Value(reqInfoKey{}).(*reqInfo); ok {
		return i
	}
	return nil
}

// requestID returns the request ID of ctx ("" outside a request).
func requestID(ctx context.Context) string {
	if i := infoOf(ctx); i != nil {
		return i.id
	}
	return ""
}

// newRequestID returns 16 random bytes in hex.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// validRequestID accepts a client's ID of printable ASCII up to maxRequestIDLen.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// outer wraps the whole mux, outermost first: request ID, access log and latency metric,
// panic recovery, body size limit.
func (s *Server) outer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &reqInfo{id: r.Header.Get(RequestIDHeader)}
		if !validRequestID(info.id) {
			info.id = newRequestID()
		}
		w.Header().Set(RequestIDHeader, info.id)
		ctx := context.WithValue(r.Context(), reqInfoKey{}, info)
		r = r.WithContext(ctx)
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)

		rw := &responseWriter{ResponseWriter: w, req: r, info: info, status: http.StatusOK}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.ErrorContext(ctx, "panic serving request", "panic", v, "stack", string(debug.Stack()),
					"method", r.Method, "path", r.URL.Path)
				if !rw.wroteHeader {
					writeProblem(rw, r, newProblem(http.StatusInternalServerError, "internal", "Internal Server Error",
						"the server failed to handle the request; it has been logged"))
				}
			}
			route := info.route
			if route == "" {
				route = unmatchedRoute
			}
			elapsed := time.Since(start)
			s.metrics.request(route, r.Method, rw.status, elapsed)
			level := accessLevel(r.Method, rw.status)
			if !s.log.Enabled(ctx, level) {
				return
			}
			s.log.LogAttrs(ctx, level, "request", slog.String("request_id", info.id), slog.String("method", r.Method),
				slog.String("path", r.URL.Path), slog.String("route", route), slog.Int("status", rw.status),
				slog.Int("bytes", rw.bytes), slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
				slog.String("user", info.user), slog.String("remote", r.RemoteAddr))
		}()
		next.ServeHTTP(rw, r)
	})
}

// accessLevel is the level of a request's access-log line: successful reads at DEBUG (the
// request metrics count them; a line each would cost the hottest reads a write(2) each),
// writes and client errors at INFO, server errors at ERROR.
func accessLevel(method string, status int) slog.Level {
	switch {
	case status >= 500:
		return slog.LevelError
	case status < 400 && (method == http.MethodGet || method == http.MethodHead):
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// responseWriter records the status and size of a response, and turns the mux's own plain
// text 404 and 405 answers (no route matched) into problems.
type responseWriter struct {
	http.ResponseWriter
	req         *http.Request
	info        *reqInfo
	status      int
	bytes       int
	wroteHeader bool
	swallow     bool
}

func (w *responseWriter) WriteHeader(status int) {
	if w.wroteHeader {
		return
	}
	if w.info.route == "" && (status == http.StatusNotFound || status == http.StatusMethodNotAllowed) {
		w.swallow = true // the mux's text body follows; the problem replaces it
		w.wroteHeader = true
		w.status = status
		p := newProblem(http.StatusNotFound, "not_found", "Not Found", "no such resource")
		if status == http.StatusMethodNotAllowed {
			p = newProblem(status, "method_not_allowed", "Method Not Allowed",
				"allowed: "+w.Header().Get("Allow"))
		}
		writeProblem(w.ResponseWriter, w.req, p)
		return
	}
	w.wroteHeader = true
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.swallow {
		return len(b), nil
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// refused reports whether the answer written to w (the outer middleware's writer) refused
// the request before it could change anything: 400 (bad input), 401, 403, 413 (a body
// over the limit) or 429 (over the rate). Other client errors are not: a 409 may follow
// a change (paying an expired order expires it on the spot, releasing its stock). An
// answer not yet written, or a writer of another kind, is not known to be a refusal.
func refused(w http.ResponseWriter) bool {
	rw, ok := w.(*responseWriter)
	if !ok || !rw.wroteHeader {
		return false
	}
	switch rw.status {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestEntityTooLarge,
		http.StatusTooManyRequests:
		return true
	}
	return false
}

// route wraps one route's handler: it records the route pattern for the outer middleware,
// sets the request timeout (unless the route has its own deadline), authenticates,
// refuses writes while the database takes none, rate-limits writes, and applies the
// Idempotency-Key where the route asks.
func (s *Server) route(rt Route) http.Handler {
	var h http.Handler = rt.Handler
	if rt.Idempotent {
		h = s.idempotent(h)
	}
	pattern := rt.Pattern()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := infoOf(r.Context())
		info.route = pattern
		if !rt.OwnDeadline {
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
			defer cancel()
			r = r.WithContext(ctx)
		}
		if rt.Auth == AuthMetrics && s.scrape.matches(r) {
			h.ServeHTTP(w, r) // the scrape token: a read of /metrics, and nothing else
			return
		}
		var p Principal
		if rt.Auth != AuthNone {
			var err error
			if p, err = s.auth.authenticate(r); err != nil {
				writeProblem(w, r, authProblem(err))
				return
			}
			info.user = p.UserID
			if !s.checkRevoked(w, r, p, rt.Revokes) {
				return
			}
			if rt.Auth != AuthUser && !p.Admin {
				writeProblem(w, r, newProblem(http.StatusForbidden, "forbidden", "Forbidden", "this route needs the admin role"))
				return
			}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead { // the mux serves HEAD with the GET route
			// While MySQL holds or refuses writes (a global read lock, read_only), every
			// route but a GET (or its HEAD) writes: refused at once, once the caller is
			// known (a logout of a token already revoked, which writes nothing, is
			// answered above), rather than holding a pooled connection for the server's
			// lock wait and filling the pool ahead of the reads.
			if s.writable != nil {
				if err := s.writable(); err != nil {
					s.writeError(w, r, err)
					return
				}
			}
			// A write may have changed stock: read-your-writes. A request refused before it
			// ran changed nothing, and must not let anyone, token or not, defeat the cache.
			defer func() {
				if !refused(w) {
					s.stock.dropAll()
				}
			}()
		}
		if rt.Auth != AuthNone {
			if rt.Write {
				key, whose := p.UserID, "write requests of this user"
				if rt.Revokes && p.TokenID != "" {
					// Logout is limited per token, not per user: whoever holds a stolen
					// token could otherwise keep the user's bucket empty with writes and
					// so keep the user from revoking it. A thief spending this bucket is
					// logging the token out. (A key with a space: no user ID has one.)
					key, whose = "logout "+p.TokenID, "logouts with this token"
				}
				if ok, retry := s.limiter.allow(r.Context(), key); !ok {
					pr := newProblem(http.StatusTooManyRequests, "rate_limited", "Too Many Requests",
						whose+" exceed "+strconv.FormatFloat(s.cfg.RateLimit, 'g', -1, 64)+"/s")
					pr.RetryAfter = retry
					writeProblem(w, r, pr)
					return
				}
			}
			r = r.WithContext(withPrincipal(r.Context(), p))
		}
		h.ServeHTTP(w, r)
	})
}
