package member

import (
	"fmt"
	"time"

	"github.com/commercekit/commercekit/errcode"
)

// Errors, for errors.Is; errcode.CodeOf and errcode.ReasonOf read their code and reason.
// Storage errors are returned wrapped as they are; a denylist that
// cannot answer matches errcode.ErrUnavailable.
var (
	// ErrInvalidRequest: the request failed validation and changed nothing (*ValidationError).
	// It is errcode.ErrInvalidArgument.
	ErrInvalidRequest = errcode.ErrInvalidArgument
	// ErrLoginIDTaken: another member has the login ID.
	ErrLoginIDTaken = errcode.New(errcode.Conflict, "login_id_taken", "member: login ID taken")
	// ErrBadCredentials: no member has the login ID, or the password is wrong (the two are
	// not told apart).
	ErrBadCredentials = errcode.New(errcode.Unauthenticated, "invalid_credentials", "member: wrong login ID or password")
	// ErrTooManyAttempts: too many failed logins for the login ID or from the address
	// (*RateLimitError).
	ErrTooManyAttempts = errcode.New(errcode.ResourceExhausted, "too_many_login_attempts", "member: too many failed logins")
	// ErrInvalidRefreshToken: the refresh token is unknown, expired, or of a revoked
	// session.
	ErrInvalidRefreshToken = errcode.New(errcode.Unauthenticated, "invalid_refresh_token", "member: invalid refresh token")
	// ErrRefreshTokenReused: the refresh token was used before; its session is revoked.
	ErrRefreshTokenReused = errcode.New(errcode.Unauthenticated, "refresh_token_reused", "member: refresh token reused; the session is revoked")
	// ErrNotRevocable: the access token has no jti, so it cannot be put on the denylist.
	ErrNotRevocable = errcode.New(errcode.InvalidArgument, "token_not_revocable", "member: the token has no jti and cannot be revoked")
)

// ValidationError says which field of a request is wrong and why. It matches
// ErrInvalidRequest.
type ValidationError = errcode.InvalidError

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
