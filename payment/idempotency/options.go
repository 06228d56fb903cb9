package idempotency

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/commercekit/commercekit/internal/option"
)

// Defaults of the Store's options.
const (
	// DefaultRetention is how long a key and its response are kept (Stripe's 24 hours).
	DefaultRetention = 24 * time.Hour

	// DefaultLockTimeout is how long a claim holds a key before another request with the
	// same fingerprint may take it over. It must exceed the longest a request may take (a
	// PG approval with its retries): Do gives fn a context that expires with the claim.
	// 60 s also bounds how long the key of a crashed request answers ErrInProgress.
	DefaultLockTimeout = 60 * time.Second
)

// Option configures a Store. An option given an invalid value (see each option) makes New
// fail with an *InvalidError naming the option.
type Option func(*settings)

// settings is what the options of New fill.
type settings struct {
	option.Errors
	*Store
}

// WithRetention sets how long a key and its final response are kept after the response is
// stored (default DefaultRetention). It must exceed the lock timeout.
func WithRetention(d time.Duration) Option {
	return func(s *settings) { option.Positive(&s.Errors, &s.retention, "WithRetention", d) }
}

// WithLockTimeout sets how long a claim holds its key (default DefaultLockTimeout); after
// that a request with the same fingerprint takes the key over, and fn's context in Do has
// expired. It must be at least a millisecond, the resolution of the coarsest backend
// (Redis): a shorter one, and a retention of a few more nanoseconds, would expire a key as
// it is stored, so that a repeated request ran again instead of being replayed.
func WithLockTimeout(d time.Duration) Option {
	return func(s *settings) {
		if d < time.Millisecond {
			s.Reject("WithLockTimeout", fmt.Sprintf("%v is less than a millisecond", d))
			return
		}
		s.lockTimeout = d
	}
}

// WithClock sets the clock that dates claims, locks and expiry (default time.Now). Backends
// compare only the times the Store gives them, so a test can move time with it; in
// production the clocks of all processes sharing a backend should agree (NTP) — a process
// whose clock runs ahead sees locks expire early by as much. It must not be nil.
func WithClock(now func() time.Time) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.clock, "WithClock", now) }
}

// WithLogger sets the logger for takeovers, lost locks and failed releases (default:
// discard). It must not be nil.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.logger, "WithLogger", l) }
}

// WithObserver sets the observer told of every outcome (default: none). It must not be nil.
func WithObserver(o Observer) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.observer, "WithObserver", o) }
}
