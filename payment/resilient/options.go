package resilient

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/observe"
)

// config holds the policies' settings; defaults in defaults().
type config struct {
	option.Errors
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

// Option configures a Gateway's policies. An option given an invalid value (see each
// option) makes Wrap fail with an *errcode.InvalidError naming the option
// (errcode.ErrInvalidArgument).
type Option func(*config)

// WithAttemptTimeout sets how long one attempt may take (default 10s; positive). An attempt
// that takes longer is abandoned as ErrOutcomeUnknown (the PG may have processed it) and may
// be retried.
func WithAttemptTimeout(d time.Duration) Option {
	return func(c *config) { option.Positive(&c.Errors, &c.attemptTimeout, "WithAttemptTimeout", d) }
}

// WithRetries sets how many attempts a call gets in all (default 3; 1 means no retry; at
// least 1) and the backoff between them: backoff after the first failure, doubling up to
// maxBackoff (defaults 100ms and 2s; 0 < backoff <= maxBackoff), each pause varied by the
// jitter factor.
func WithRetries(maxAttempts int, backoff, maxBackoff time.Duration) Option {
	return func(c *config) {
		if maxAttempts < 1 || backoff <= 0 || maxBackoff < backoff {
			c.Reject("WithRetries", fmt.Sprintf("%d attempts, %v..%v: need attempts >= 1 and 0 < backoff <= max", maxAttempts, backoff, maxBackoff))
			return
		}
		c.maxAttempts, c.backoff, c.maxBackoff = maxAttempts, backoff, maxBackoff
	}
}

// WithJitter sets the jitter factor of the retry backoff, in [0, 1] (default 0.5: each pause
// is its nominal value ±50%), so that callers failing together do not retry in lockstep.
func WithJitter(factor float64) Option {
	return func(c *config) {
		if !(factor >= 0 && factor <= 1) { // NaN too
			c.Reject("WithJitter", fmt.Sprintf("%v is not within [0, 1]", factor))
			return
		}
		c.jitter = factor
	}
}

// WithBreaker sets when the circuit breaker opens: once failures of the last window calls
// failed (default 5 of 10, i.e. 50% of the last 10; 1 <= failures <= window), and how long
// it stays open before letting trial calls through, half-open (default 30s; positive).
func WithBreaker(failures, window uint, openFor time.Duration) Option {
	return func(c *config) {
		if failures < 1 || window < failures || openFor <= 0 {
			c.Reject("WithBreaker", fmt.Sprintf("%d of %d, %v: need 1 <= failures <= window and a positive delay", failures, window, openFor))
			return
		}
		c.breakerFailures, c.breakerWindow, c.breakerDelay = failures, window, openFor
	}
}

// WithHalfOpenSuccesses sets how many trial calls in a row must succeed for a half-open
// breaker to close (default 3; positive); one failure opens it again.
func WithHalfOpenSuccesses(n uint) Option {
	return func(c *config) { option.Positive(&c.Errors, &c.halfOpenSuccesses, "WithHalfOpenSuccesses", n) }
}

// WithBulkhead limits the calls in flight to the PG (default 64; positive) and how long a
// call waits for a free slot before failing with ErrGatewayUnavailable (default 1s; 0 fails
// at once; not negative).
func WithBulkhead(maxConcurrent uint, maxWait time.Duration) Option {
	return func(c *config) {
		if maxConcurrent < 1 || maxWait < 0 {
			c.Reject("WithBulkhead", fmt.Sprintf("%d, %v: need a positive limit and a wait not negative", maxConcurrent, maxWait))
			return
		}
		c.maxConcurrent, c.maxWait = maxConcurrent, maxWait
	}
}

// WithObserver sets the Observer told of breaker state changes (default: none). It must not
// be nil.
func WithObserver(o Observer) Option {
	return func(c *config) { option.NotNil(&c.Errors, &c.observer, "WithObserver", o) }
}

// WithLogger sets the logger (default: discard). It must not be nil.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { option.NotNil(&c.Errors, &c.logger, "WithLogger", l) }
}
