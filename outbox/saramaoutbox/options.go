package saramaoutbox

import (
	"io"
	"log/slog"
	"time"
)

// Option configures a ConsumerHandler or Redrive.
type Option func(*options)

type options struct {
	logger     *slog.Logger
	minBackoff time.Duration
	maxBackoff time.Duration
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithBackoff sets the bounds of the pause between two deliveries of a batch that failed
// for a reason other than its events (the database is down, a dead letter could not be
// produced). Default 100ms..10s; bounds with min < 0 or max < min are ignored.
func WithBackoff(minPause, maxPause time.Duration) Option {
	return func(o *options) {
		if minPause >= 0 && maxPause >= minPause {
			o.minBackoff, o.maxBackoff = minPause, maxPause
		}
	}
}

func newOptions(opts []Option) options {
	o := options{
		logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		minBackoff: 100 * time.Millisecond,
		maxBackoff: 10 * time.Second,
	}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}
