package idempotency

import (
	"fmt"
	"unicode/utf8"
)

// Response is the final outcome of an idempotent request as it is stored and replayed: an
// HTTP server writes Status and Body back; a Go caller reads ErrorCode to tell a business
// failure from a success (and maps it back to its own error). Body is opaque bytes and is
// replayed byte for byte.
type Response struct {
	// Status is an HTTP status code, or 0 for callers that do not speak HTTP.
	Status int
	// ErrorCode is empty for a success, else a short machine-readable code of the caller's
	// choosing (e.g. "card_declined"); at most MaxErrorCodeLength bytes.
	ErrorCode string
	// Body is the response body, replayed byte for byte.
	Body []byte
}

// Failed reports whether r records a failure (a non-empty ErrorCode).
func (r Response) Failed() bool { return r.ErrorCode != "" }

// MaxErrorCodeLength bounds Response.ErrorCode, in bytes.
const MaxErrorCodeLength = 255

func (r Response) validate() error {
	switch {
	case r.Status < 0 || r.Status > 999:
		return &InvalidError{Field: "response", Reason: fmt.Sprintf("status %d is outside 0..999", r.Status)}
	case len(r.ErrorCode) > MaxErrorCodeLength:
		return &InvalidError{Field: "response", Reason: fmt.Sprintf("error code is %d bytes long, more than %d", len(r.ErrorCode), MaxErrorCodeLength)}
	case !utf8.ValidString(r.ErrorCode) || hasControl(r.ErrorCode):
		return &InvalidError{Field: "response", Reason: "error code is not printable UTF-8"}
	}
	return nil
}
