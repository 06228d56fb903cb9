package commerce

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/observe"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/payment"
)

// Defaults of a Service.
const (
	DefaultOrderExpiry    = 15 * time.Minute
	DefaultPaymentWindow  = 15 * time.Minute
	DefaultCancelWindow   = 24 * time.Hour
	DefaultRewardRate     = 100 // basis points: 1% of the amount due
	DefaultSweepInterval  = time.Second
	DefaultRecoverAfter   = 30 * time.Second
	DefaultRecoverEvery   = 5 * time.Second
	DefaultEventRetention = 7 * 24 * time.Hour
	DefaultTopic          = "commerce-orders"
)

// Config holds what a Service is built from. Every SQL-backed part (commerce's own tables,
// the SQL inventory backend if used, coupons, the ledger, payments and the outbox) lives in
// the one database DB, so that checkout can commit them in one local transaction.
type Config struct {
	// DB is the database of orders, the catalog and every SQL leaf.
	DB *bun.DB
	// Inventory reserves stock: SQL (joins checkout's transaction) or Redis (does not; see
	// the package documentation).
	Inventory *inventory.Inventory
	// Coupons redeems coupons; its records must be in DB.
	Coupons *coupon.Service
	// Ledger holds, captures and refunds points; it must be on DB.
	Ledger *ledger.Ledger
	// Payments charges and refunds through the PG; it must be on DB.
	Payments *payment.Service
	// Reconciler settles payments the Service could not (optional; Run runs it).
	Reconciler *payment.Reconciler
	// Outbox writes events in checkout's transactions (required).
	Outbox *outbox.Writer
	// Relay publishes the outbox (optional; Run runs it and commits notify it).
	Relay *outbox.Relay
	// Cleaner deletes old sent events (optional; Run runs it).
	Cleaner *outbox.Cleaner
}

// Service is checkout: the catalog, orders and their payment, cancellation, expiry,
// points top-ups, recovery and audit, composed of the leaf packages. It is safe for
// concurrent use, also by several processes sharing the same stores.
type Service struct {
	db    *bun.DB
	inv   *inventory.Inventory
	stock stockStep
	coup  *coupon.Service
	led   *ledger.Ledger
	pay   *payment.Service
	recon *payment.Reconciler
	out   *outbox.Writer
	relay *outbox.Relay
	clean *outbox.Cleaner
	cfg   settings
	wake  chan struct{}
}

type settings struct {
	option.Errors
	now            func() time.Time
	log            *slog.Logger
	obs            Observer
	expiry         time.Duration
	payWindow      time.Duration
	cancelWindow   time.Duration
	rewardBP       int64
	fault          func(step string) error
	topics         Topics
	sweepEvery     time.Duration
	recoverAfter   time.Duration
	recoverEvery   time.Duration
	eventRetention time.Duration

	maxUnpaidPerProduct, maxUnpaidUnits int64
}

// Option configures a Service. An option given an invalid value (see each option) makes
// New fail with an *errcode.InvalidError naming the option (ErrInvalidConfig).
type Option func(*settings)

// WithClock sets where the Service reads the time (expiry, the cancel window, timestamps);
// default time.Now. Give the leaves the same clock. It must not be nil.
func WithClock(now func() time.Time) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.now, "WithClock", now) }
}

// WithLogger sets the logger (background loops and recovery log through it); default
// discards. It must not be nil.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.log, "WithLogger", l) }
}

// WithObserver sets the metrics hook; default none. It must not be nil.
func WithObserver(o Observer) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.obs, "WithObserver", o) }
}

// WithOrderExpiry sets how long an order waits for payment before it expires; default
// DefaultOrderExpiry. It must be positive, and with the payment window at most
// ledger.MaxHoldTimeout.
func WithOrderExpiry(d time.Duration) Option {
	return func(s *settings) { option.Positive(&s.Errors, &s.expiry, "WithOrderExpiry", d) }
}

// WithPaymentWindow sets how long, past the order's expiry, its stock reservation and
// points hold last, so that a payment started just before expiry can still complete;
// default DefaultPaymentWindow. An approval that arrives later is refunded. It must be
// positive.
func WithPaymentWindow(d time.Duration) Option {
	return func(s *settings) { option.Positive(&s.Errors, &s.payWindow, "WithPaymentWindow", d) }
}

// WithCancelWindow sets how long after payment a paid order may be cancelled; default
// DefaultCancelWindow (24 hours, seed 004). It must be positive.
func WithCancelWindow(d time.Duration) Option {
	return func(s *settings) { option.Positive(&s.Errors, &s.cancelWindow, "WithCancelWindow", d) }
}

// WithRewardRate sets the reward earned on payment, in basis points of the amount paid
// through the PG (100 = 1%, rounded down); default DefaultRewardRate. 0 disables rewards;
// at most 10000. One order's reward is at most ledger.MaxAmount points, and an order whose
// reward would take the user's points past ledger.MaxBalance is paid without one.
func WithRewardRate(basisPoints int64) Option {
	return func(s *settings) {
		if basisPoints < 0 || basisPoints > 10_000 {
			s.Reject("WithRewardRate", fmt.Sprintf("%d is not within 0..10000 basis points", basisPoints))
			return
		}
		s.rewardBP = basisPoints
	}
}

// WithFaultHook sets a function consulted at every step boundary of the order flows with
// the step's name (see the package documentation); when it returns an error the flow stops
// right there, as if the process had died, and returns that error. For tests of recovery.
// It must not be nil.
func WithFaultHook(f func(step string) error) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.fault, "WithFaultHook", f) }
}

// WithTopic writes every event to one topic, instead of the per-type DefaultTopics.
func WithTopic(topic string) Option {
	return func(s *settings) {
		for typ := range s.topics {
			s.topics[typ] = topic
		}
	}
}

// WithTopics sets the topics of the event types it names (see EventTypes); the others keep
// theirs (default DefaultTopics).
func WithTopics(t Topics) Option {
	return func(s *settings) {
		for typ, topic := range t {
			s.topics[typ] = topic
		}
	}
}

// WithSweepInterval sets how often Run expires unpaid orders; default
// DefaultSweepInterval. It must be positive.
func WithSweepInterval(d time.Duration) Option {
	return func(s *settings) { option.Positive(&s.Errors, &s.sweepEvery, "WithSweepInterval", d) }
}

// WithRecovery sets how old (since its last change) an order in flight must be before
// Run's recovery loop takes it over (default DefaultRecoverAfter: younger ones are likely
// still being driven by their request; not negative) and how often that loop runs (default
// DefaultRecoverEvery; positive). Recover itself takes every order in flight, whatever its
// age.
func WithRecovery(after, every time.Duration) Option {
	return func(s *settings) {
		if after < 0 {
			s.Reject("WithRecovery", fmt.Sprintf("after %v is negative", after))
			return
		}
		s.recoverAfter = after
		option.Positive(&s.Errors, &s.recoverEvery, "WithRecovery", every)
	}
}

// WithEventRetention tells Audit how long the outbox keeps sent events (the Cleaner's
// retention; default DefaultEventRetention): events of orders closed longer ago than that
// are not expected any more. It must be positive.
func WithEventRetention(d time.Duration) Option {
	return func(s *settings) { option.Positive(&s.Errors, &s.eventRetention, "WithEventRetention", d) }
}

// New returns a Service over the parts in cfg. Create the tables first (CreateSchema, or
// CreateAllSchemas for the leaves too). A missing part, or an option given an invalid value,
// makes it fail with ErrInvalidConfig (an *errcode.InvalidError naming the option for the
// latter).
func New(cfg Config, opts ...Option) (*Service, error) {
	st := settings{
		Errors:         option.Errors{Sentinel: ErrInvalidConfig},
		now:            time.Now,
		log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		expiry:         DefaultOrderExpiry,
		payWindow:      DefaultPaymentWindow,
		cancelWindow:   DefaultCancelWindow,
		rewardBP:       DefaultRewardRate,
		topics:         DefaultTopics(),
		sweepEvery:     DefaultSweepInterval,
		recoverAfter:   DefaultRecoverAfter,
		recoverEvery:   DefaultRecoverEvery,
		eventRetention: DefaultEventRetention,

		maxUnpaidPerProduct: DefaultMaxUnpaidPerProduct,
		maxUnpaidUnits:      DefaultMaxUnpaidUnits,
	}
	optErr := option.Apply(&st, opts)
	var missing []string
	for _, part := range []struct {
		name string
		ok   bool
	}{
		{"DB", cfg.DB != nil}, {"Inventory", cfg.Inventory != nil}, {"Coupons", cfg.Coupons != nil},
		{"Ledger", cfg.Ledger != nil}, {"Payments", cfg.Payments != nil}, {"Outbox", cfg.Outbox != nil},
	} {
		if !part.ok {
			missing = append(missing, part.name)
		}
	}
	switch {
	case len(missing) > 0:
		return nil, fmt.Errorf("%w: Config lacks %v", ErrInvalidConfig, missing)
	case optErr != nil:
		return nil, optErr
	case st.expiry+st.payWindow > ledger.MaxHoldTimeout:
		return nil, fmt.Errorf("%w: order expiry + payment window exceeds %v", ErrInvalidConfig, ledger.MaxHoldTimeout)
	}
	if err := st.topics.check(); err != nil {
		return nil, err
	}
	return &Service{
		db: cfg.DB, inv: cfg.Inventory, stock: stockStep{cfg.Inventory}, coup: cfg.Coupons, led: cfg.Ledger, pay: cfg.Payments,
		recon: cfg.Reconciler, out: cfg.Outbox, relay: cfg.Relay, clean: cfg.Cleaner,
		cfg:  st,
		wake: make(chan struct{}, 1),
	}, nil
}

// now is the clock's time in UTC at microsecond precision (what every table stores).
func (s *Service) now() time.Time { return s.cfg.now().UTC().Truncate(time.Microsecond) }

// step consults the fault hook at a step boundary (none: "").
func (s *Service) step(name string) error {
	if s.cfg.fault == nil || name == "" {
		return nil
	}
	if err := s.cfg.fault(name); err != nil {
		return fmt.Errorf("%w at %s: %w", ErrInjected, name, err)
	}
	return nil
}

func (s *Service) observe(o Outcome, method string, amount int64) {
	if s.cfg.obs != nil {
		s.cfg.obs.Observe(observe.Event{Component: "commerce", Name: string(o), N: amount,
			Labels: map[string]string{"method": method}})
	}
}

// MethodPoints and MethodNone are the Observer's method labels of an order paid by points
// alone (nothing due to the PG) and of one whose method is not chosen yet (placed, or
// expired or cancelled before Pay).
const (
	MethodPoints = "POINTS"
	MethodNone   = "none"
)

// methodLabel is the Observer's method label of r.
func (r *orderRow) methodLabel() string {
	switch {
	case r.PayMethod != "":
		return r.PayMethod
	case r.AmountDue == 0:
		return MethodPoints
	}
	return MethodNone
}

// notify wakes the relay after a commit that added events.
func (s *Service) notify() {
	if s.relay != nil {
		s.relay.Notify()
	}
}

// kick wakes the recovery loop (after a webhook, for example).
func (s *Service) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

var errLostRace = errors.New("commerce: order changed concurrently")
