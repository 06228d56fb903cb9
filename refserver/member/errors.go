package member

import (
	"errors"
	"fmt"
	"time"
)

// Errors, for errors.Is. Storage errors are returned wrapped as they are; a denylist that
// cannot answer matches errcode.ErrUnavailable.
var (
	// ErrInvalidRequest: the request failed validation and changed nothing (*ValidationError).
	ErrInvalidRequest = errors.New("member: invalid request")
	// ErrLoginIDTaken: another member has the login ID.
	ErrLoginIDTaken = errors.New("member: login ID taken")
	// ErrBadCredentials: no member has the login ID, or the password is wrong (the two are
	// not told apart).
	ErrBadCredentials = errors.New("member: wrong login ID or password")
	// ErrTooManyAttempts: too many failed logins for the login ID or from the address
	// (*RateLimitError).
	ErrTooManyAttempts = errors.New("member: too many failed logins")
	// ErrInvalidRefreshToken: the refresh token is unknown, expired, or of a revoked
	// session.
	ErrInvalidRefreshToken = errors.New("member: invalid refresh token")
	// ErrRefreshTokenReused: the refresh token was used before; its session is revoked.
	ErrRefreshTokenReused = errors.New("member: refresh token reused; the session is revoked")
	// ErrNotRevocable: the access token has no jti, so it cannot be put on the denylist.
	ErrNotRevocable = errors.New("member: the token has no jti and cannot be revoked")
)

// ValidationError says which field of a request is wrong and why. It matches
// ErrInvalidRequest.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("member: invalid %s: %s", e.Field, e.Reason)
}

// Unwrap returns ErrInvalidRequest.
func (e *ValidationError) Unwrap() error { return ErrInvalidRequest }

// RateLimitError says which limit stopped a login and when to try again. It matches
// ErrTooManyAttempts.
type RateLimitError struct {
	// By is "login_id" or "address".
	By         string
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("member: too many failed logins for this %s; retry in %s", e.By, e.RetryAfter.Round(time.Second))
}

// Unwrap returns ErrTooManyAttempts.
func (e *RateLimitError) Unwrap() error { return ErrTooManyAttempts }
