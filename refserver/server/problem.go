package server

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ProblemTypePrefix starts the type URI of every problem the server answers; the stable
// machine-readable code follows it and is also the problem's "code" member.
const ProblemTypePrefix = "urn:commercekit:problem:"

// Problem is an RFC 9457 problem details object, with two extension members: code, a
// stable snake_case identifier clients switch on, and request_id, the X-Request-ID of the
// request, to quote when asking about it.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Instance  string `json:"instance,omitempty"`
	Code      string `json:"code"`
	RequestID string `json:"request_id,omitempty"`
	// Field names the offending input, for validation problems.
	Field string `json:"field,omitempty"`
	// RetryAfter is the number of seconds after which a retry may succeed (429, 503, some 409).
	RetryAfter int `json:"retry_after,omitempty"`
}

// newProblem returns the problem for status and code with a title.
func newProblem(status int, code, title, detail string) Problem {
	return Problem{Type: ProblemTypePrefix + code, Title: title, Status: status, Code: code, Detail: detail}
}

// writeProblem answers p as application/problem+json, filling instance and request_id from
// r, and the headers some statuses call for.
func writeProblem(w http.ResponseWriter, r *http.Request, p Problem) {
	p.Instance = r.URL.Path
	p.RequestID = requestID(r.Context())
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	if p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	if p.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="commercekit"`)
	}
	body, _ := json.Marshal(p) // a Problem always encodes
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(body, '\n'))
}

// writeError answers err through the mapping table (see errors.go).
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	p := s.problemFor(err)
	if p.Status >= 500 {
		s.log.ErrorContext(r.Context(), "request failed", "err", err, "status", p.Status, "code", p.Code)
	}
	writeProblem(w, r, p)
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encoding the response failed", http.StatusInternalServerError)
		return
	}
	writeRaw(w, status, "application/json", append(body, '\n'))
}

// writeRaw answers body as it is.
func writeRaw(w http.ResponseWriter, status int, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
