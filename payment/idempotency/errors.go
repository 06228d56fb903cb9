package idempotency

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/commercekit/commercekit/errcode"
)

// Sentinel errors, for errors.Is. The Store returns them wrapped in an *InvalidError or a
// *KeyError, which carry the detail.
var (
	// ErrInvalid: a scope, key, fingerprint, response or option is malformed. Nothing was
	// stored and nothing ran. It is errcode.ErrInvalidArgument.
	ErrInvalid = errcode.ErrInvalidArgument

	// ErrKeyReused: the key is bound to a different request (another fingerprint), whether
	// that request is still running or has completed. The caller must use a new key; an
	// HTTP server answers 422 Unprocessable Entity. It matches errcode.ErrKeyReused.
	ErrKeyReused = errcode.Derive(errcode.ErrKeyReused, "idempotency: key reused with a different request")

	// ErrInProgress: the first request with this key is still running. The caller may retry
	// later with the same key and will then get that request's response; an HTTP server
	// answers 409 Conflict.
	ErrInProgress = errcode.New(errcode.Conflict, "request_in_progress", "idempotency: a request with this key is in progress")

	// ErrLockLost (fencing): the claim named by a token is no longer held, because its lock
	// expired and another request took the key over, or because it was already completed or
	// released. The response was not stored. Backends return this sentinel as it is; the
	// Store wraps it in a *KeyError.
	ErrLockLost = errcode.New(errcode.Conflict, "request_in_progress", "idempotency: claim no longer held")
)

// InvalidError says which argument ("scope", "key", "fingerprint", "response", "claim" or
// an option name) is malformed and why. It matches ErrInvalid.
type InvalidError = errcode.InvalidError

// KeyError reports why a key cannot be used right now. Err is ErrKeyReused, ErrInProgress
// or ErrLockLost, and errors.Is matches it.
type KeyError struct {
	Scope, Key string
	Err        error
	// LockedUntil is, for ErrInProgress, when the running request's claim expires: if that
	// request has crashed, a retry at or after this time takes the key over.
	LockedUntil time.Time
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("%v (scope %q, key %q)", e.Err, e.Scope, e.Key)
}

// Unwrap returns the sentinel.
func (e *KeyError) Unwrap() error { return e.Err }

// HTTPStatus maps the package's errors to HTTP status codes, in one place, the way an HTTP
// server should answer them (Stripe's choices): ErrInvalid 400 (being
// errcode.ErrInvalidArgument, also any other package's invalid input), ErrKeyReused 422,
// ErrInProgress 409, ErrLockLost 409. ok is false for any other error.
func HTTPStatus(err error) (status int, ok bool) {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest, true
	case errors.Is(err, ErrKeyReused):
		return http.StatusUnprocessableEntity, true
	case errors.Is(err, ErrInProgress), errors.Is(err, ErrLockLost):
		return http.StatusConflict, true
	}
	return 0, false
}
