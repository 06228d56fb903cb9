package server

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testServer is a Server with the HTTP machinery only (no backends), serving a few test
// routes plus the operations routes that need none.
func testServer() *Server {
	s := &Server{cfg: Defaults(), log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: time.Now}
	s.cfg.MaxBodyBytes = 1024
	s.auth = newAuthenticator([]byte("0123456789abcdef"), time.Now)
	s.limiter = newLimiter(0, 1, time.Now)
	s.metrics = newMetrics(s.code)
	mux := http.NewServeMux()
	for _, rt := range []Route{
		{Method: http.MethodGet, Path: "/panic", Handler: func(http.ResponseWriter, *http.Request) { panic("boom") }},
		{Method: http.MethodPost, Path: "/echo", Handler: func(w http.ResponseWriter, r *http.Request) {
			var v map[string]any
			if err := decode(r, &v); err != nil {
				s.writeError(w, r, err)
				return
			}
			writeJSON(w, http.StatusOK, v)
		}},
		{Method: http.MethodGet, Path: "/slow", Handler: func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done() // the per-request deadline ends it
			s.writeError(w, r, r.Context().Err())
		}},
		{Method: http.MethodGet, Path: "/openapi.json", Handler: s.handleOpenAPI},
	} {
		mux.Handle(rt.Pattern(), s.route(rt))
	}
	s.handler = s.outer(mux)
	return s
}

func serve(s *Server, method, path string, body io.Reader, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, body)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	s.handler.ServeHTTP(rec, r)
	return rec
}

func problemOf(t *testing.T, rec *httptest.ResponseRecorder) Problem {
	t.Helper()
	require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"), rec.Body.String())
	var p Problem
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p))
	assert.Equal(t, rec.Code, p.Status)
	assert.Equal(t, ProblemTypePrefix+p.Code, p.Type)
	return p
}

func TestRecoverAnswersProblem(t *testing.T) {
	s := testServer()
	rec := serve(s, http.MethodGet, "/panic", nil)
	assert.Equal(t, http.StatusInternalServerError, rec.Code)
	p := problemOf(t, rec)
	assert.Equal(t, "internal", p.Code)
	assert.NotEmpty(t, p.RequestID)
	assert.NotContains(t, rec.Body.String(), "boom", "the panic value is logged, not sent")
	assert.Contains(t, mustGather(t, s), `commercekit_http_request_duration_seconds_count{method="GET",route="GET /panic",status="500"} 1`)
}

func TestUnmatchedRoutesAnswerProblems(t *testing.T) {
	s := testServer()
	rec := serve(s, http.MethodGet, "/nowhere", nil)
	assert.Equal(t, http.StatusNotFound, rec.Code)
	assert.Equal(t, "not_found", problemOf(t, rec).Code)

	rec = serve(s, http.MethodDelete, "/echo", nil)
	assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
	assert.Equal(t, "method_not_allowed", problemOf(t, rec).Code)
	assert.Equal(t, "POST", rec.Header().Get("Allow"))
	assert.Contains(t, mustGather(t, s), `route="unmatched"`)
}

func TestRequestID(t *testing.T) {
	s := testServer()
	rec := serve(s, http.MethodPost, "/echo", strings.NewReader(`{"a":1}`), RequestIDHeader, "client-id-42")
	assert.Equal(t, "client-id-42", rec.Header().Get(RequestIDHeader), "a valid client ID is kept")
	rec = serve(s, http.MethodPost, "/echo", strings.NewReader(`{"a":1}`), RequestIDHeader, "bad id with spaces")
	assert.Len(t, rec.Header().Get(RequestIDHeader), 32, "an invalid one is replaced")
}

func TestBodyLimitAndMalformedInput(t *testing.T) {
	s := testServer()
	rec := serve(s, http.MethodPost, "/echo", strings.NewReader(`{"a":"`+strings.Repeat("x", 2000)+`"}`))
	assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
	assert.Equal(t, "body_too_large", problemOf(t, rec).Code)

	for _, body := range []string{``, `{`, `[1]`, `{"a":1}{"b":2}`} {
		rec = serve(s, http.MethodPost, "/echo", strings.NewReader(body))
		assert.Equal(t, http.StatusBadRequest, rec.Code, body)
		assert.Equal(t, "malformed_request", problemOf(t, rec).Code, body)
	}
}

func TestRequestDeadline(t *testing.T) {
	s := testServer()
	s.cfg.RequestTimeout = 50 * time.Millisecond
	rec := serve(s, http.MethodGet, "/slow", nil)
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	p := problemOf(t, rec)
	assert.Equal(t, "timeout", p.Code)
	assert.Equal(t, "1", rec.Header().Get("Retry-After"))
}

func mustGather(t *testing.T, s *Server) string {
	t.Helper()
	rec := httptest.NewRecorder()
	s.metrics.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.String()
}
