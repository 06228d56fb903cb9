// Package errcode is commercekit's shared error vocabulary: errors every package can return
// and every caller can match with errors.Is and errors.As, whichever package produced them.
//
// Today it holds the answer to "a dependency failed": a Redis, MySQL, Kafka or PG call that
// timed out, was refused or broke off, or a cache that is being rebuilt and must not be read.
// Such an error says nothing about the business request, so callers answer it honestly (an
// HTTP 503 with Retry-After) instead of guessing a business outcome.
package errcode

import (
	"errors"
	"fmt"
	"time"
)

// ErrUnavailable matches (errors.Is) every error saying that a dependency could not answer:
// the request may succeed if retried later and changed nothing that will not be repaired.
var ErrUnavailable = errors.New("dependency unavailable")

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
