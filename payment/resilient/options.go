package resilient

import (
	"log/slog"
	"time"

	"github.com/commercekit/commercekit/observe"
)

// config holds the policies' settings; defaults in defaults().
type config struct {
	attemptTimeout    time.Duration
	maxAttempts       int
	backoff           time.Duration
	maxBackoff        time.Duration
	jitter            float64
	breakerFailures   uint
	breakerWindow     uint
	breakerDelay      time.Duration
	halfOpenSuccesses uint
	maxConcurrent     uint
	maxWait           time.Duration
	observer          Observer
	logger            *slog.Logger
}

func defaults() config {
	return config{
		attemptTimeout:    10 * time.Second,
		maxAttempts:       3,
		backoff:           100 * time.Millisecond,
		maxBackoff:        2 * time.Second,
		jitter:            0.5,
		breakerFailures:   5,
		breakerWindow:     10,
		breakerDelay:      30 * time.Second,
		halfOpenSuccesses: 3,
		maxConcurrent:     64,
		maxWait:           time.Second,
		observer:          observe.Nop{},
		logger:            slog.New(slog.DiscardHandler),
	}
}

// Option configures a Gateway's policies.
type Option func(*config)

// WithAttemptTimeout sets how long one attempt may take (default 10s). An attempt that takes
// longer is abandoned as ErrOutcomeUnknown (the PG may have processed it) and may be retried.
func WithAttemptTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.attemptTimeout = d
		}
	}
}

// WithRetries sets how many attempts a call gets in all (default 3; 1 means no retry) and the
// backoff between them: backoff after the first failure, doubling up to maxBackoff (defaults
// 100ms and 2s), each pause varied by the jitter factor.
func WithRetries(maxAttempts int, backoff, maxBackoff time.Duration) Option {
	return func(c *config) {
		if maxAttempts >= 1 {
			c.maxAttempts = maxAttempts
		}
		if backoff > 0 && maxBackoff >= backoff {
			c.backoff, c.maxBackoff = backoff, maxBackoff
		}
	}
}

// WithJitter sets the jitter factor of the retry backoff, in [0, 1] (default 0.5: each pause
// is its nominal value ±50%), so that callers failing together do not retry in lockstep.
func WithJitter(factor float64) Option {
	return func(c *config) {
		if factor >= 0 && factor <= 1 {
			c.jitter = factor
		}
	}
}

// WithBreaker sets when the circuit breaker opens: once failures of the last window calls
// failed (default 5 of 10, i.e. 50% of the last 10), and how long it stays open before
// letting trial calls through, half-open (default 30s).
func WithBreaker(failures, window uint, openFor time.Duration) Option {
	return func(c *config) {
		if failures >= 1 && window >= failures {
			c.breakerFailures, c.breakerWindow = failures, window
		}
		if openFor > 0 {
			c.breakerDelay = openFor
		}
	}
}

// WithHalfOpenSuccesses sets how many trial calls in a row must succeed for a half-open
// breaker to close (default 3); one failure opens it again.
func WithHalfOpenSuccesses(n uint) Option {
	return func(c *config) {
		if n >= 1 {
			c.halfOpenSuccesses = n
		}
	}
}

// WithBulkhead limits the calls in flight to the PG (default 64) and how long a call waits
// for a free slot before failing with ErrGatewayUnavailable (default 1s; 0 fails at once).
func WithBulkhead(maxConcurrent uint, maxWait time.Duration) Option {
	return func(c *config) {
		if maxConcurrent >= 1 {
			c.maxConcurrent = maxConcurrent
		}
		if maxWait >= 0 {
			c.maxWait = maxWait
		}
	}
}

// WithObserver sets the Observer told of breaker state changes (default: none).
func WithObserver(o Observer) Option {
	return func(c *config) {
		if o != nil {
			c.observer = o
		}
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = l
		}
	}
}
