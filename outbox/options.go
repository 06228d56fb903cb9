package outbox

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/observe"
)

// Option configures a Writer, Relay, Cleaner or Consumer. The doc of each option says
// which of them it applies to; passing an option to a constructor it does not apply to,
// like an invalid value, is an error of the constructor: an *errcode.InvalidError naming
// the option, matching ErrInvalidConfig (and errcode.ErrInvalidArgument), so a setting never
// goes silently unused.
type Option func(*settings)

// kind is the type a constructor builds, or the set of types an option applies to.
type kind uint8

const (
	kindWriter kind = 1 << iota
	kindRelay
	kindCleaner
	kindConsumer
)

func (k kind) String() string {
	switch k {
	case kindWriter:
		return "Writer"
	case kindRelay:
		return "Relay"
	case kindCleaner:
		return "Cleaner"
	}
	return "Consumer"
}

type settings struct {
	building      kind // the type being built
	logger        *slog.Logger
	clock         func() time.Time
	metrics       metrics
	batchSize     int
	interval      time.Duration
	minBackoff    time.Duration
	maxBackoff    time.Duration
	maxAttempts   int
	retention     time.Duration
	keepProcessed time.Duration
	leaseWindow   time.Duration
	deadLetters   DeadLetterSink
	maxEventBytes int
	hasBackoff    bool
	hasInterval   bool
	hasBatchSize  bool
	option.Errors
}

// WithLogger sets the logger (default: discard); not nil. All types.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.logger, "WithLogger", l) }
}

// WithClock sets the clock (default time.Now): CreatedAt of new events, sent_at, the relay
// lag, the cleaner's retention cut-off, processed_at and dead_at; not nil. All types.
func WithClock(now func() time.Time) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.clock, "WithClock", now) }
}

// WithObserver sets the metrics hook (default: none); not nil. Relay, Cleaner and
// Consumer.
func WithObserver(o Observer) Option {
	return func(s *settings) {
		if s.appliesTo(kindRelay|kindCleaner|kindConsumer, "WithObserver") {
			option.NotNil(&s.Errors, &s.metrics.o, "WithObserver", o)
		}
	}
}

// WithBatchSize sets how many rows or events one step handles: events per publish for the
// Relay (default DefaultRelayBatchSize, 500), events per handler transaction for a Consumer (default 100, as in
// seed 003), rows per DELETE for the Cleaner (default 1000). It must be at least 1.
func WithBatchSize(n int) Option {
	return func(s *settings) {
		if !s.appliesTo(kindRelay|kindCleaner|kindConsumer, "WithBatchSize") {
			return
		}
		if n < 1 {
			s.Reject("WithBatchSize", fmt.Sprintf("%d is less than 1", n))
			return
		}
		s.batchSize, s.hasBatchSize = n, true
	}
}

// WithInterval sets how long Run waits when there is nothing to do: the Relay's poll
// interval (default 1s; Notify wakes it earlier) and the Cleaner's pause between two
// passes (default 1 minute). It must be positive.
func WithInterval(d time.Duration) Option {
	return func(s *settings) {
		if !s.appliesTo(kindRelay|kindCleaner, "WithInterval") {
			return
		}
		if d <= 0 {
			s.Reject("WithInterval", fmt.Sprintf("%v is not positive", d))
			return
		}
		s.interval, s.hasInterval = d, true
	}
}

// WithBackoff sets the bounds of the exponential, jittered pause after a failure: between
// two relay rounds that failed to publish (default 100ms..30s) and between two attempts of
// a failing event in a Consumer (default 50ms..5s). 0 <= min <= max.
func WithBackoff(minPause, maxPause time.Duration) Option {
	return func(s *settings) {
		if !s.appliesTo(kindRelay|kindConsumer, "WithBackoff") {
			return
		}
		if minPause < 0 || maxPause < minPause {
			s.Reject("WithBackoff", fmt.Sprintf("%v..%v is not 0 <= min <= max", minPause, maxPause))
			return
		}
		s.minBackoff, s.maxBackoff, s.hasBackoff = minPause, maxPause, true
	}
}

// WithMaxAttempts sets how many times a Consumer tries an event on its own before it
// dead-letters it (default 5). It must be at least 1.
func WithMaxAttempts(n int) Option {
	return func(s *settings) {
		if !s.appliesTo(kindConsumer, "WithMaxAttempts") {
			return
		}
		if n < 1 {
			s.Reject("WithMaxAttempts", fmt.Sprintf("%d is less than 1", n))
			return
		}
		s.maxAttempts = n
	}
}

// WithLeaseWindow sets how long a Consumer's Deliver leases the events it handles, after
// the Consumer's first delivery and after each failed handler transaction (default 1
// minute; see Consumer.Deliver): the longer, the more crashes under an event are counted
// from the first, at the cost of a durable commit per batch meanwhile. AlwaysLease leases
// every delivery. It must be positive.
func WithLeaseWindow(d time.Duration) Option {
	return func(s *settings) {
		if !s.appliesTo(kindConsumer, "WithLeaseWindow") {
			return
		}
		if d <= 0 {
			s.Reject("WithLeaseWindow", fmt.Sprintf("%v is not positive", d))
			return
		}
		s.leaseWindow = d
	}
}

// AlwaysLease is the WithLeaseWindow that never ends: every delivery leases its events, and
// every crash under an event counts.
const AlwaysLease time.Duration = math.MaxInt64

// WithRetention sets how long the Cleaner keeps sent events (default 7 days). It must be
// positive.
func WithRetention(d time.Duration) Option {
	return func(s *settings) {
		if !s.appliesTo(kindCleaner, "WithRetention") {
			return
		}
		if d <= 0 {
			s.Reject("WithRetention", fmt.Sprintf("%v is not positive", d))
			return
		}
		s.retention = d
	}
}

// WithProcessedRetention makes the Cleaner also delete processed-event records older than d
// (default 0: keep them forever). Choose d far longer than any redelivery can take (the
// topic's retention): a duplicate arriving after its record is gone is applied again. The
// record of an event its consumer still holds in the DeadLetterTable of the Cleaner's
// database (dead-lettered, then delivered again and applied) is kept until the letter is
// gone, so that Redrive, however late, finds it applied. Dead letters kept elsewhere (a
// Kafka dead-letter topic, another database) are out of the Cleaner's sight: re-drive them
// (saramaoutbox.Redrive) within d, or keep the records.
// Consumers' leases (TableInflight) taken longer ago than d go too: those of events never
// delivered again after a delivery died under them.
func WithProcessedRetention(d time.Duration) Option {
	return func(s *settings) {
		if !s.appliesTo(kindCleaner, "WithProcessedRetention") {
			return
		}
		if d < 0 {
			s.Reject("WithProcessedRetention", fmt.Sprintf("%v is negative", d))
			return
		}
		s.keepProcessed = d
	}
}

// WithDeadLetters sets where a Consumer puts the events it gives up on (default: the
// outbox_dead_letters table on the consumer's database). saramaoutbox.DeadLetterQueue sends
// them to a Kafka topic instead. Not nil.
func WithDeadLetters(sink DeadLetterSink) Option {
	return func(s *settings) {
		if !s.appliesTo(kindConsumer, "WithDeadLetters") {
			return
		}
		option.NotNil(&s.Errors, &s.deadLetters, "WithDeadLetters", sink)
	}
}

// WithMaxEventBytes sets the largest event Size that Add accepts (default
// DefaultMaxEventBytes); a larger event fails with ErrEventTooLarge and nothing is written.
// Set it to what the publisher behind the relay takes: with Kafka,
// saramaoutbox.MaxEventBytes of the producer's configuration. It must be at least 1. Writer.
func WithMaxEventBytes(n int) Option {
	return func(s *settings) {
		if !s.appliesTo(kindWriter, "WithMaxEventBytes") {
			return
		}
		if n < 1 {
			s.Reject("WithMaxEventBytes", fmt.Sprintf("%d is less than 1", n))
			return
		}
		s.maxEventBytes = n
	}
}

// appliesTo reports whether the type being built is one of to, and records the misuse of
// the option name otherwise.
func (s *settings) appliesTo(to kind, name string) bool {
	if s.building&to == 0 {
		s.Reject(name, "does not apply to a "+s.building.String())
		return false
	}
	return true
}

// newSettings applies opts, for the type k, over the defaults shared by every type; each
// constructor then fills its own defaults for what was not set.
func newSettings(k kind, opts []Option) (settings, error) {
	s := settings{
		Errors:        option.Errors{Sentinel: ErrInvalidConfig},
		building:      k,
		logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		clock:         time.Now,
		metrics:       metrics{observe.Nop{}},
		maxAttempts:   5,
		retention:     7 * 24 * time.Hour,
		leaseWindow:   time.Minute,
		maxEventBytes: DefaultMaxEventBytes,
	}
	return s, option.Apply(&s, opts)
}

// defaults fills batch size, interval and backoff bounds that no option set.
func (s *settings) defaults(batch int, interval, minBackoff, maxBackoff time.Duration) {
	if !s.hasBatchSize {
		s.batchSize = batch
	}
	if !s.hasInterval {
		s.interval = interval
	}
	if !s.hasBackoff {
		s.minBackoff, s.maxBackoff = minBackoff, maxBackoff
	}
}

// now returns the clock's time in UTC at the microsecond precision the tables keep.
func (s *settings) now() time.Time { return s.clock().UTC().Truncate(time.Microsecond) }
