package pgsim

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Option configures a Simulator.
type Option func(*Simulator)

// WithLatency makes every call take a random time in [min, max] before it is processed
// (default 0).
func WithLatency(min, max time.Duration) Option {
	return func(s *Simulator) {
		if min >= 0 && max >= min {
			s.latencyMin, s.latencyMax = min, max
		}
	}
}

// WithDeclineRate declines that fraction of new approvals with CodeDoNotHonor (default 0).
func WithDeclineRate(rate float64) Option {
	return func(s *Simulator) {
		if rate >= 0 && rate <= 1 {
			s.declineRate = rate
		}
	}
}

// WithFaultRate plays fault f on that fraction of calls (default 0 for every fault).
func WithFaultRate(f Fault, rate float64) Option {
	return func(s *Simulator) {
		if rate >= 0 && rate <= 1 && f != FaultNone {
			s.faultRates[f] = rate
		}
	}
}

// WithSeed seeds the random choices (latency, declines, faults) for reproducible runs
// (default: a random seed).
func WithSeed(seed uint64) Option {
	return func(s *Simulator) { s.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }
}

// WithoutIdempotency makes the simulator a broken PG that ignores idempotency keys: every
// Approve charges again. Only for proving that a test would catch a double charge.
func WithoutIdempotency() Option {
	return func(s *Simulator) { s.idempotent = false }
}

// WithWebhookSecret sets the HMAC key webhooks are signed with (default
// DefaultWebhookSecret).
func WithWebhookSecret(secret []byte) Option {
	return func(s *Simulator) {
		if len(secret) > 0 {
			s.secret = append([]byte(nil), secret...)
		}
	}
}

// WithWebhook has the simulator call deliver, on a goroutine of its own, after every new
// outcome (approved, declined, refunded), with the signed event. An error from deliver is
// retried up to attempts times in all (default 3) with a growing pause, as PGs do.
// PostWebhook makes a deliver that POSTs to a URL.
func WithWebhook(deliver func(ctx context.Context, body []byte, signature string) error, attempts int) Option {
	return func(s *Simulator) {
		s.deliver = deliver
		if attempts >= 1 {
			s.deliveryAttempts = attempts
		}
	}
}

// WithClock sets the clock stamping webhook events (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(s *Simulator) {
		if now != nil {
			s.clock = now
		}
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *Simulator) {
		if l != nil {
			s.logger = l
		}
	}
}
