package pgsim

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/commercekit/commercekit/internal/option"
)

// Option configures a Simulator.
type Option func(*settings)

// settings is what the options of New fill.
type settings struct {
	option.Errors
	*Simulator
}

// WithLatency makes every call take a random time in [min, max] before it is processed
// (default 0).
func WithLatency(min, max time.Duration) Option {
	return func(s *settings) {
		if min < 0 || max < min {
			s.Reject("WithLatency", fmt.Sprintf("%v..%v is not 0 <= min <= max", min, max))
			return
		}
		s.latencyMin, s.latencyMax = min, max
	}
}

// WithDeclineRate declines that fraction of new approvals with CodeDoNotHonor (default 0).
func WithDeclineRate(rate float64) Option {
	return func(s *settings) {
		if !(rate >= 0 && rate <= 1) { // NaN too
			s.Reject("WithDeclineRate", fmt.Sprintf("%v is not within [0, 1]", rate))
			return
		}
		s.declineRate = rate
	}
}

// WithFaultRate plays fault f on that fraction of calls (default 0 for every fault).
func WithFaultRate(f Fault, rate float64) Option {
	return func(s *settings) {
		if !(rate >= 0 && rate <= 1) || f == FaultNone {
			s.Reject("WithFaultRate", fmt.Sprintf("%v of %v: need a fault and a rate within [0, 1]", rate, f))
			return
		}
		s.faultRates[f] = rate
	}
}

// WithSeed seeds the random choices (latency, declines, faults) for reproducible runs
// (default: a random seed).
func WithSeed(seed uint64) Option {
	return func(s *settings) { s.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }
}

// WithoutIdempotency makes the simulator a broken PG that ignores idempotency keys: every
// Approve charges again. Only for proving that a test would catch a double charge.
func WithoutIdempotency() Option {
	return func(s *settings) { s.idempotent = false }
}

// WithKeyRetention makes the simulator forget an idempotency key d after its first use (by
// the simulator's clock), as real PGs prune theirs (Stripe: after 24 hours): a request
// repeated with a pruned key is processed as a new one, so an Approve charges again and a
// Cancel refunds again. The payment itself stays known to Status. Default: keys are kept
// forever. d must be positive.
func WithKeyRetention(d time.Duration) Option {
	return func(s *settings) { option.Positive(&s.Errors, &s.keyRetention, "WithKeyRetention", d) }
}

// WithWebhookSecret sets the HMAC key webhooks are signed with (default
// DefaultWebhookSecret).
func WithWebhookSecret(secret []byte) Option {
	return func(s *settings) {
		if len(secret) == 0 {
			s.Reject("WithWebhookSecret", "an empty secret is not allowed")
			return
		}
		s.secret = append([]byte(nil), secret...)
	}
}

// WithWebhook has the simulator call deliver, on a goroutine of its own, after every new
// outcome (approved, declined, refunded), with the signed event. An error from deliver is
// retried up to attempts times in all (default 3) with a growing pause, as PGs do.
// PostWebhook makes a deliver that POSTs to a URL.
func WithWebhook(deliver func(ctx context.Context, body []byte, signature string) error, attempts int) Option {
	return func(s *settings) {
		if deliver == nil || attempts < 1 {
			s.Reject("WithWebhook", fmt.Sprintf("%d attempts: need a deliver function and attempts >= 1", attempts))
			return
		}
		s.deliver, s.deliveryAttempts = deliver, attempts
	}
}

// WithClock sets the clock stamping webhook events and ageing idempotency keys (default
// time.Now).
func WithClock(now func() time.Time) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.clock, "WithClock", now) }
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.logger, "WithLogger", l) }
}
