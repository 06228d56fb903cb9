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
	option.Errors
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
// It must not be nil.
func WithClock(now func() time.Time) Option {
	return func(c *config) { option.NotNil(&c.Errors, &c.clock, "WithClock", now) }
}

// WithLogger sets the logger (the sweeper logs its failures); default discards. It must not
// be nil.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { option.NotNil(&c.Errors, &c.log, "WithLogger", l) }
}

// WithObserver sets the metrics hook; default none. It must not be nil.
func WithObserver(o Observer) Option {
	return func(c *config) { option.NotNil(&c.Errors, &c.obs, "WithObserver", o) }
}

// WithDefaultTTL sets the TTL of reservations that ask for none; default DefaultTTL. It
// must be positive.
func WithDefaultTTL(d time.Duration) Option {
	return func(c *config) { option.Positive(&c.Errors, &c.defaultTTL, "WithDefaultTTL", d) }
}

// WithSweepInterval sets how often Run sweeps; default DefaultSweepInterval. It must be
// positive.
func WithSweepInterval(d time.Duration) Option {
	return func(c *config) { option.Positive(&c.Errors, &c.sweepEvery, "WithSweepInterval", d) }
}

// WithSweepBatch sets how many reservations one sweep step expires in one go; default
// DefaultSweepBatch. It must be positive.
func WithSweepBatch(n int) Option {
	return func(c *config) { option.Positive(&c.Errors, &c.sweepBatch, "WithSweepBatch", n) }
}
