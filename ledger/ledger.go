package ledger

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/observe"
)

// Ledger is a double-entry point ledger stored through bun in MySQL/MariaDB or SQLite.
// It is safe for concurrent use. Create the tables once with CreateSchema.
type Ledger struct {
	db         bun.IDB
	clock      func() time.Time
	log        *slog.Logger
	obs        Observer
	sweepEvery time.Duration
	sweepBatch int
}

// Option configures a Ledger.
type Option func(*settings)

// Observer receives what the ledger does, e.g. to feed Prometheus metrics: the one shape
// every package shares. With Component "ledger" it is told an Event when an operation
// returns (Name "charge", "earn", "spend", "refund", "adjust", "hold", "capture" or
// "void"; Err nil on success, a repeated request that returned the original result
// included; inside a caller's transaction a success may still be rolled back by the
// caller), and after each Sweep that resolved something observe.Expired events of kind
// "hold" (holds released at their deadline) and "lot" (lots of earned points expired).
type Observer = observe.Observer

// WithLogger sets the logger (default: discard). It must not be nil.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.log, "WithLogger", l) }
}

// WithClock sets the clock used for hold deadlines, expiry and the time of entries
// (default: time.Now). Times are stored in UTC, to the microsecond. It must not be nil.
func WithClock(now func() time.Time) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.clock, "WithClock", now) }
}

// WithObserver sets the observer (default: none). It must not be nil.
func WithObserver(o Observer) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.obs, "WithObserver", o) }
}

// WithSweepInterval sets how often Run sweeps (default: one second). It must be positive.
func WithSweepInterval(d time.Duration) Option {
	return func(s *settings) { option.Positive(&s.Errors, &s.sweepEvery, "WithSweepInterval", d) }
}

// WithSweepBatch sets how many due holds or lots Sweep lists per query (default: 100).
// Each is resolved in a transaction of its own. It must be positive.
func WithSweepBatch(n int) Option {
	return func(s *settings) { option.Positive(&s.Errors, &s.sweepBatch, "WithSweepBatch", n) }
}

// settings is what the options of New fill.
type settings struct {
	option.Errors
	Ledger
}

// New returns a Ledger on db, a *bun.DB (each operation runs in a transaction of its own)
// or a bun.Tx (operations join it; see WithTx). An option given an invalid value (see each
// option) is refused with an *errcode.InvalidError naming it (ErrInvalid), and no Ledger.
func New(db bun.IDB, opts ...Option) (*Ledger, error) {
	s := settings{Ledger: Ledger{
		db:         db,
		clock:      time.Now,
		log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		obs:        observe.Nop{},
		sweepEvery: time.Second,
		sweepBatch: 100,
	}}
	if err := option.Apply(&s, opts); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return &s.Ledger, nil
}

// WithTx returns a copy of l whose operations run on db. When db is a bun.Tx (typically
// the checkout's, from RunInTx) they join it: each runs under a savepoint, so a failed
// operation undoes only its own writes and leaves the caller's transaction usable, and
// everything commits or rolls back with the caller's transaction. Otherwise each operation
// opens a transaction of its own, retried on deadlock.
//
// Inside a caller's transaction nothing is retried: a deadlock aborts the whole
// transaction, and only its owner can run it again.
func (l *Ledger) WithTx(db bun.IDB) *Ledger {
	c := *l
	c.db = db
	return &c
}

// now is the ledger's clock in UTC, truncated to what the databases store.
func (l *Ledger) now() time.Time {
	return l.clock().UTC().Truncate(time.Microsecond)
}

// finish turns err into what callers see and reports the operation to the observer.
func (l *Ledger) finish(ctx context.Context, op string, start time.Time, err error) error {
	err = l.translate(ctx, op, err)
	l.obs.Observe(observe.Timed("ledger", op, start, err))
	if errors.Is(err, ErrStorage) {
		l.log.WarnContext(ctx, "ledger operation failed", "op", op, "err", err)
	}
	return err
}

// translate turns err into what callers see: the package's own errors as they are, the
// context's error once it is done, anything else wrapped in ErrStorage — and, when the
// database was lost or unreachable, also matching errcode.ErrUnavailable.
func (l *Ledger) translate(ctx context.Context, op string, err error) error {
	switch {
	case err == nil, isDomain(err):
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return sqlutil.Unavailable(l.db, fmt.Errorf("%w: %s: %w", ErrStorage, op, err))
}

// isDomain reports whether err is one of the package's own errors.
func isDomain(err error) bool {
	for _, s := range []error{ErrInvalid, ErrInsufficientPoints, ErrBalanceLimit, ErrIDReused, ErrSpendNotFound,
		ErrRefundExceedsSpend, ErrHoldNotFound, ErrHoldCaptured, ErrHoldVoided, ErrHoldExpired,
		ErrCaptureExceedsHold, ErrConflict, ErrDrift, ErrStorage} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
