package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/payment/idempotency"
)

// Idempotency headers.
const (
	// IdempotencyKeyHeader carries a write's idempotency key, as Stripe and the IETF draft
	// name it. The source documents' ADR-004 names it idempotency_key
	// (IdempotencyKeyHeaderADR), which is taken too, as the same key; proxies often drop
	// header names with underscores, so clients should send this one.
	IdempotencyKeyHeader = "Idempotency-Key"
	// IdempotencyKeyHeaderADR is the header name of the source documents' ADR-004.
	IdempotencyKeyHeaderADR = "idempotency_key"
	// ReplayedHeader is set to "true" on a response replayed from an earlier request with the
	// same key.
	ReplayedHeader = "Idempotent-Replayed"
)

// errTransient tells Store.Do that the recorded response must not be kept: the key is
// released and a retry with it runs again.
var errTransient = errors.New("transient response")

// keepResponse says whether a recorded response is final for its Idempotency-Key: stored
// and replayed to every retry with the key, so the key stays bound to its request. Final:
// successes and every 4xx the request's execution decided (409 invalid_order_state or
// order_expired, 422, 404...): running the same request again would give the same answer,
// and the key must not be freed for another request (that is 422 idempotency_key_reused).
// Not final, so the key is freed and a retry runs again: server and dependency failures
// (5xx), rate limiting (429), 202 (the PG has not answered yet: the retry continues the
// same payment and returns its outcome), any answer carrying Retry-After — a request still
// in flight elsewhere (request_in_progress, refund_in_progress) — as Stripe does, input
// refused before anything ran (400, 413): the client fixes its request and may keep its
// key; and the execution's own idempotency_key_reused (code, the answer's problem code):
// commerce found the key bound to another request in its own record, which outlives this
// store's (Redis lost it, or it expired). The key is that request's: kept here, this answer
// would bind it to this one, and that request's own retry would be refused as reusing it.
func keepResponse(status int, header http.Header, code string) bool {
	switch {
	case status >= 500, status == http.StatusTooManyRequests, status == http.StatusAccepted,
		status == http.StatusBadRequest, status == http.StatusRequestEntityTooLarge,
		code == errcode.ReasonOf(errcode.ErrKeyReused):
		return false
	}
	return header.Get("Retry-After") == ""
}

// idempotent makes a write route honour the Idempotency-Key header with Stripe's semantics,
// through the idempotency Store: scope = the authenticated user, fingerprint = method, path
// and (canonicalised JSON) body. The first request runs; a retry with the same key and
// request gets the stored status and body with Idempotent-Replayed: true (see keepResponse
// for which responses are kept); the same key with another request is 422, and while the
// first still runs 409.
func (s *Server) idempotent(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, ok := idempotencyKey(w, r)
		if !ok {
			return
		}
		// The handlers read the key from Idempotency-Key, whichever header it came in.
		header := r.Header.Clone()
		header.Del(IdempotencyKeyHeaderADR)
		header.Set(IdempotencyKeyHeader, key)
		r = r.WithContext(r.Context())
		r.Header = header
		body, err := readAll(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		fp := idempotency.FingerprintRequest(r.Method, r.URL.Path, body)

		var rec *recorder
		resp, replayed, err := s.idem.Do(r.Context(), principal(r.Context()).UserID, key, fp,
			func(ctx context.Context) (idempotency.Response, error) {
				rec = newRecorder()
				r.Body = io.NopCloser(bytes.NewReader(body))
				next.ServeHTTP(rec, r.WithContext(ctx))
				resp := idempotency.Response{Status: rec.status, ErrorCode: rec.problemCode(), Body: rec.body.Bytes()}
				switch {
				case rec.status == http.StatusServiceUnavailable:
					// A dependency failed: the store frees the key in the background
					// instead of making this answer wait on a backend that may be down.
					return resp, errcode.Unavailable("request", errTransient)
				case !keepResponse(rec.status, rec.header, resp.ErrorCode):
					return resp, errTransient
				}
				return resp, nil
			})
		switch {
		case errors.Is(err, errTransient):
			rec.copyTo(w)
		case err != nil:
			s.writeError(w, r, err)
		default:
			if replayed {
				w.Header().Set(ReplayedHeader, "true")
				if loc := location(r, resp); loc != "" {
					w.Header().Set("Location", loc)
				}
			} else {
				copyHeader(w.Header(), rec.header)
			}
			ct := "application/json"
			if resp.ErrorCode != "" {
				ct = "application/problem+json"
			}
			writeRaw(w, resp.Status, ct, resp.Body)
		}
	})
}

// idempotencyKey reads the Idempotency-Key header (or idempotency_key) of a route that
// requires one, or answers 400: idempotency_key_missing without one, invalid_idempotency_key
// for one longer than commerce.MaxKeyLen bytes (the shortest limit of those behind the
// routes: the key store counts 255 characters, checkout 255 bytes), not UTF-8, with a
// control character, or for two different keys in those headers. Every route checks its key
// here, so a bad key gets one answer wherever it is sent.
func idempotencyKey(w http.ResponseWriter, r *http.Request) (string, bool) {
	var key string
	for _, k := range append(r.Header.Values(IdempotencyKeyHeader), r.Header.Values(IdempotencyKeyHeaderADR)...) {
		if key != "" && k != key {
			p := newProblem(http.StatusBadRequest, "invalid_idempotency_key", "Bad Request",
				"the request carries two different idempotency keys: send one Idempotency-Key")
			p.Field = IdempotencyKeyHeader
			writeProblem(w, r, p)
			return "", false
		}
		key = k
	}
	switch {
	case key == "":
		writeProblem(w, r, newProblem(http.StatusBadRequest, "idempotency_key_missing", "Bad Request",
			"this route requires an Idempotency-Key header (a unique value per operation, e.g. a UUID)"))
		return "", false
	case len(key) > commerce.MaxKeyLen || !utf8.ValidString(key) || strings.ContainsFunc(key, unicode.IsControl):
		p := newProblem(http.StatusBadRequest, "invalid_idempotency_key", "Bad Request",
			"the Idempotency-Key must be 1-"+strconv.Itoa(commerce.MaxKeyLen)+" bytes of UTF-8 without control characters")
		p.Field = IdempotencyKeyHeader
		writeProblem(w, r, p)
		return "", false
	}
	return key, true
}

// location is the Location header of a replayed 201, which the store does not keep: the
// created resource, at the route's path followed by the stored body's "id" (POST
// /v1/orders → /v1/orders/{id}, POST /v1/points/top-ups → /v1/points/top-ups/{id}), as
// the handlers set it on the first answer.
func location(r *http.Request, resp idempotency.Response) string {
	var created struct {
		ID string `json:"id"`
	}
	if resp.Status != http.StatusCreated || json.Unmarshal(resp.Body, &created) != nil || created.ID == "" {
		return ""
	}
	return r.URL.Path + "/" + created.ID
}

// recorder buffers a handler's response so that it can be stored before it is sent.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
	wrote  bool
}

func newRecorder() *recorder { return &recorder{header: make(http.Header), status: http.StatusOK} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if !r.wrote {
		r.status, r.wrote = status, true
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}

// problemCode returns the code of a problem response, "" for anything else.
func (r *recorder) problemCode() string {
	if r.header.Get("Content-Type") != "application/problem+json" {
		return ""
	}
	var p struct {
		Code string `json:"code"`
	}
	if json.Unmarshal(r.body.Bytes(), &p) != nil || p.Code == "" {
		return "error"
	}
	return p.Code
}

// copyTo sends the recorded response to w.
func (r *recorder) copyTo(w http.ResponseWriter) {
	copyHeader(w.Header(), r.header)
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body.Bytes())
}

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
}
