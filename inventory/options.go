package inventory

import (
	"log/slog"
	"time"

	"github.com/commercekit/commercekit/internal/option"
)

// Defaults of an Inventory.
const (
	DefaultTTL           = 15 * time.Minute
	DefaultSweepInterval = time.Second
	DefaultSweepBatch    = 100
)

// Option configures an Inventory.
type Option func(*config)

type config struct {
	clock      func() time.Time
	log        *slog.Logger
	obs        Observer
	defaultTTL time.Duration
	sweepEvery time.Duration
	sweepBatch int
}

func defaults() config {
	return config{
		clock:      time.Now,
		log:        slog.New(slog.DiscardHandler),
		defaultTTL: DefaultTTL,
		sweepEvery: DefaultSweepInterval,
		sweepBatch: DefaultSweepBatch,
	}
}

// WithClock sets where the Inventory reads the time (deadlines, expiry); default time.Now.
func WithClock(now func() time.Time) Option {
	return func(c *config) {
		if now != nil {
			c.clock = now
		}
	}
}

// WithLogger sets the logger (the sweeper logs its failures); default discards.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// WithObserver sets the metrics hook; default none.
func WithObserver(o Observer) Option { return func(c *config) { c.obs = o } }

// WithDefaultTTL sets the TTL of reservations that ask for none; default DefaultTTL.
func WithDefaultTTL(d time.Duration) Option {
	return func(c *config) { option.Positive(&c.defaultTTL, d) }
}

// WithSweepInterval sets how often Run sweeps; default DefaultSweepInterval.
func WithSweepInterval(d time.Duration) Option {
	return func(c *config) { option.Positive(&c.sweepEvery, d) }
}

// WithSweepBatch sets how many reservations one sweep step expires in one go; default
// DefaultSweepBatch.
func WithSweepBatch(n int) Option {
	return func(c *config) { option.Positive(&c.sweepBatch, n) }
}
