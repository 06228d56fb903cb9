package saramaoutbox

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/commercekit/commercekit/internal/option"
)

// Option configures a ConsumerHandler or Redrive. An option given an invalid value makes
// NewConsumerHandler or Redrive fail with an *errcode.InvalidError naming the option.
type Option func(*options)

type options struct {
	option.Errors
	logger     *slog.Logger
	minBackoff time.Duration
	maxBackoff time.Duration
}

// WithLogger sets the logger (default: discard). It must not be nil.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { option.NotNil(&o.Errors, &o.logger, "WithLogger", l) }
}

// WithBackoff sets the bounds of the pause between two deliveries of a batch that failed
// for a reason other than its events (the database is down, a dead letter could not be
// produced). Default 100ms..10s; 0 <= min <= max.
func WithBackoff(minPause, maxPause time.Duration) Option {
	return func(o *options) {
		if minPause < 0 || maxPause < minPause {
			o.Reject("WithBackoff", fmt.Sprintf("%v..%v is not 0 <= min <= max", minPause, maxPause))
			return
		}
		o.minBackoff, o.maxBackoff = minPause, maxPause
	}
}

// newOptions applies opts over the defaults, and returns the first refusal of a value.
func newOptions(opts []Option) (options, error) {
	o := options{
		logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		minBackoff: 100 * time.Millisecond,
		maxBackoff: 10 * time.Second,
	}
	if err := option.Apply(&o, opts); err != nil {
		return o, fmt.Errorf("saramaoutbox: %w", err)
	}
	return o, nil
}
