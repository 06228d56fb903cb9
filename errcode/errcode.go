// Package errcode is commercekit's shared error vocabulary: a small set of codes every
// package's errors map to, and the few errors every package shares, matched with errors.Is
// and errors.As whichever package produced them.
//
// A Code says what kind of answer an error is (invalid input, not found, a business rule
// refused the request, a dependency failed...), in the spirit of Go CDK's gcerrors.Code;
// CodeOf reads it from any error chain. A package declares its sentinels with New (or
// derives them from a shared one with Derive), so each carries a Code and a stable
// snake_case reason ("out_of_stock", "coupon_sold_out") that ReasonOf reads: an HTTP server
// maps codes to statuses in one short table and uses the reason as its machine-readable
// error code, and metrics label errors with it. A typed error carries its sentinel's code
// by unwrapping to it (Unwrap, not an Is method alone: CodeOf walks the chain with
// errors.As).
//
// Shared errors:
//   - ErrInvalidArgument: invalid input; nothing changed. *InvalidError names the field.
//   - ErrKeyReused: an idempotency key or caller-chosen ID was used before for another
//     request. Packages derive their own sentinel from it (ledger.ErrIDReused, ...), so
//     they stay distinct from each other and all match it. *ReusedError names the key.
//   - ErrUnavailable: a dependency could not answer (a Redis, MySQL, Kafka or PG call that
//     timed out, was refused or broke off, or a cache being rebuilt). Such an error says
//     nothing about the business request, so callers answer it honestly (an HTTP 503 with
//     Retry-After) instead of guessing a business outcome. *UnavailableError names the
//     dependency.
package errcode

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Code is the kind of answer an error gives. The zero Code is OK, the code of a nil error.
type Code int

// The codes. The HTTP status in parentheses is how refserver answers each.
const (
	// OK: no error.
	OK Code = iota
	// Unknown: an error that carries no code (HTTP 500).
	Unknown
	// InvalidArgument: the input is malformed; nothing changed, and the same request is
	// refused again (HTTP 400).
	InvalidArgument
	// Unauthenticated: the credentials or token are missing, wrong or revoked (HTTP 401).
	Unauthenticated
	// NotFound: what the request names does not exist, or is not the caller's (HTTP 404).
	NotFound
	// Conflict: the current state of what the request names does not allow it now (an
	// order's status, a request still in progress, a name taken); reading the state again
	// or retrying later may succeed (HTTP 409).
	Conflict
	// AlreadyExists: an ID or idempotency key is already bound to something else (HTTP 422).
	AlreadyExists
	// FailedPrecondition: a business rule refuses the request as it is: too little stock
	// or points, a limit, an unusable coupon, a declined payment (HTTP 422).
	FailedPrecondition
	// ResourceExhausted: the caller made too many attempts; wait before trying again
	// (HTTP 429).
	ResourceExhausted
	// DependencyUnavailable: a dependency failed or is busy; nothing is known to have
	// changed that will not be repaired, and a retry may succeed (HTTP 503).
	DependencyUnavailable
	// Canceled: the caller went away (context.Canceled).
	Canceled
	// DeadlineExceeded: the request's deadline passed (context.DeadlineExceeded).
	DeadlineExceeded
	// Internal: an invariant broke or a misconfiguration; a bug to look into (HTTP 500).
	Internal
)

var codeNames = [...]string{"ok", "unknown", "invalid_argument", "unauthenticated", "not_found", "conflict",
	"already_exists", "failed_precondition", "resource_exhausted", "dependency_unavailable", "canceled",
	"deadline_exceeded", "internal"}

// String returns the code's snake_case name ("invalid_argument").
func (c Code) String() string {
	if c < 0 || int(c) >= len(codeNames) {
		return fmt.Sprintf("code(%d)", int(c))
	}
	return codeNames[c]
}

// Coder is implemented by errors that carry a Code; CodeOf finds the first in a chain.
type Coder interface {
	ErrorCode() Code
}

// Error is a sentinel error with a Code and a stable snake_case reason. Compare it with
// errors.Is; declare it once, at package level, with New or Derive.
type Error struct {
	code   Code
	reason string
	msg    string
	parent error
}

// New returns a sentinel with code, reason (stable snake_case, e.g. "out_of_stock") and
// message msg. When parent is given, the sentinel also matches it (errors.Is): a refinement
// of a wider error, such as a specific kind of invalid input.
func New(code Code, reason, msg string, parent ...error) error {
	e := &Error{code: code, reason: reason, msg: msg}
	if len(parent) > 0 {
		e.parent = parent[0]
	}
	return e
}

// Derive returns a new sentinel with message msg and parent's code and reason, that matches
// parent: a package's own name for a shared error, distinct from other packages' ones.
func Derive(parent error, msg string) error {
	code, reason := Of(parent)
	return &Error{code: code, reason: reason, msg: msg, parent: parent}
}

func (e *Error) Error() string { return e.msg }

// ErrorCode returns the sentinel's code.
func (e *Error) ErrorCode() Code { return e.code }

// Reason returns the sentinel's stable snake_case reason.
func (e *Error) Reason() string { return e.reason }

// Unwrap returns the error the sentinel refines, or nil.
func (e *Error) Unwrap() error { return e.parent }

// Shared sentinels.
var (
	// ErrInvalidArgument matches every invalid-input error: the request was refused before
	// it changed anything (see *InvalidError).
	ErrInvalidArgument = New(InvalidArgument, "invalid_request", "invalid argument")
	// ErrKeyReused matches every error saying that an idempotency key or caller-chosen ID
	// was used before with another request; the caller needs a new key.
	ErrKeyReused = New(AlreadyExists, "idempotency_key_reused", "key reused with a different request")
	// ErrUnavailable matches (errors.Is) every error saying that a dependency could not
	// answer: the request may succeed if retried later and changed nothing that will not
	// be repaired.
	ErrUnavailable = New(DependencyUnavailable, "dependency_unavailable", "dependency unavailable")
)

// CodeOf returns the code of err: OK for nil; DependencyUnavailable for any error matching
// ErrUnavailable, whatever else it matches (it is not a business answer); otherwise the code
// of the first error in the chain that has one (errors.As on Coder); Canceled or
// DeadlineExceeded for the context's errors; else Unknown.
func CodeOf(err error) Code {
	code, _ := Of(err)
	return code
}

// ReasonOf returns the stable snake_case reason of err: that of the error CodeOf takes the
// code from when it has a Reason method, else the code's name ("unknown" for an error
// without a code, "" for nil).
func ReasonOf(err error) string {
	_, reason := Of(err)
	return reason
}

// Of returns CodeOf(err) and ReasonOf(err) in one walk of the chain.
func Of(err error) (Code, string) {
	if err == nil {
		return OK, ""
	}
	if errors.Is(err, ErrUnavailable) {
		return DependencyUnavailable, "dependency_unavailable"
	}
	var c Coder
	if errors.As(err, &c) {
		if r, ok := c.(interface{ Reason() string }); ok && r.Reason() != "" {
			return c.ErrorCode(), r.Reason()
		}
		return c.ErrorCode(), c.ErrorCode().String()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return Canceled, Canceled.String()
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded, DeadlineExceeded.String()
	}
	return Unknown, Unknown.String()
}

// InvalidError says which field of a request is invalid and why. It matches Err, or
// ErrInvalidArgument when Err is nil; a specific Err (inventory.ErrTooManyLines, ...) is
// declared to match ErrInvalidArgument too. Every package's ValidationError is this type.
type InvalidError struct {
	// Field names the offending input, as the package's API spells it.
	Field string
	// Reason says what is wrong with it.
	Reason string
	// Err is a more specific sentinel, or nil.
	Err error
}

// Invalid returns an *InvalidError for field.
func Invalid(field, reason string) error { return &InvalidError{Field: field, Reason: reason} }

func (e *InvalidError) Error() string {
	if e.Err == nil || e.Err == ErrInvalidArgument {
		return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("%v: %s: %s", e.Err, e.Field, e.Reason)
}

// Unwrap returns Err, or ErrInvalidArgument.
func (e *InvalidError) Unwrap() error {
	if e.Err == nil {
		return ErrInvalidArgument
	}
	return e.Err
}

// FieldOf returns the field an *InvalidError in err's chain names, or "".
func FieldOf(err error) string {
	var ie *InvalidError
	if errors.As(err, &ie) {
		return ie.Field
	}
	return ""
}

// ReusedError says that an idempotency key or caller-chosen ID was used before for another
// request, and what it identifies. It matches Err, the package's own sentinel derived from
// ErrKeyReused (inventory.ErrIdempotencyConflict, ...), or ErrKeyReused when Err is nil.
// Every package's reused-key error is this type.
type ReusedError struct {
	// Kind is what the key identifies: "reservation", "order", "payment", ...
	Kind string
	// Key is the reused key or ID.
	Key string
	// Err is the package's sentinel, or nil.
	Err error
}

func (e *ReusedError) Error() string { return fmt.Sprintf("%v: %s %q", e.Unwrap(), e.Kind, e.Key) }

// Unwrap returns Err, or ErrKeyReused.
func (e *ReusedError) Unwrap() error {
	if e.Err == nil {
		return ErrKeyReused
	}
	return e.Err
}

// UnavailableError names the dependency that failed and, when known, how long before a retry
// makes sense. It matches ErrUnavailable and unwraps to the underlying error.
type UnavailableError struct {
	// Dependency is what failed: "redis", "mysql", "kafka", "pg", or a finer name such as
	// "redis (stock rebuilding)".
	Dependency string
	// RetryAfter is a hint for the caller's Retry-After; zero means "the caller's default".
	RetryAfter time.Duration
	// Err is the underlying error; it may be nil.
	Err error
}

func (e *UnavailableError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("%s unavailable", e.Dependency)
	}
	return fmt.Sprintf("%s unavailable: %v", e.Dependency, e.Err)
}

// Unwrap returns ErrUnavailable and the underlying error, so both match.
func (e *UnavailableError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrUnavailable}
	}
	return []error{ErrUnavailable, e.Err}
}

// Unavailable wraps err as an *UnavailableError of dependency. It returns err unchanged when it
// is nil or already matches ErrUnavailable.
func Unavailable(dependency string, err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	return &UnavailableError{Dependency: dependency, Err: err}
}

// RetryAfter returns the retry hint carried by err, or def when err carries none.
func RetryAfter(err error, def time.Duration) time.Duration {
	var u *UnavailableError
	if errors.As(err, &u) && u.RetryAfter > 0 {
		return u.RetryAfter
	}
	return def
}
