package coupon

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/observe"
)

// Service is the coupon API: templates, issuance, wallets and redemption. Its durable
// records live in SQL (db); issuance decisions are made by the Issuer. A Service is safe for
// concurrent use.
type Service struct {
	db bun.IDB
	*shared
}

// shared is what a Service and its WithTx copies have in common.
type shared struct {
	issuer   Issuer
	clock    func() time.Time
	log      *slog.Logger
	observer Observer

	mu        sync.Mutex
	templates map[string]Template // templates are immutable, so read ones are cached
	issuing   map[string]bool     // templates found to be issued by issuer (see claim)
	warmMu    sync.Mutex          // one warm-up of an issuer's state at a time
}

// Option configures a Service.
type Option func(*settings)

// settings is what the options of New fill.
type settings struct {
	option.Errors
	*shared
}

// WithClock sets the clock used for issue windows, expiry and hold deadlines (default
// time.Now). It must not be nil.
func WithClock(now func() time.Time) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.clock, "WithClock", now) }
}

// WithLogger sets the logger (default: discard). It must not be nil.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.log, "WithLogger", l) }
}

// WithObserver sets the observer of operations, e.g. a Prometheus adapter (default: none).
// It must not be nil.
func WithObserver(o Observer) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.observer, "WithObserver", o) }
}

// New returns a Service that keeps its records in db (a *bun.DB; MySQL/MariaDB or SQLite,
// with CreateSchema applied) and issues through issuer. An option given an invalid value
// (see each option) is refused with an *errcode.InvalidError naming it (ErrInvalidArgument),
// and no Service.
func New(db bun.IDB, issuer Issuer, opts ...Option) (*Service, error) {
	s := settings{shared: &shared{
		issuer:    issuer,
		clock:     time.Now,
		log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		observer:  observe.Nop{},
		templates: make(map[string]Template),
		issuing:   make(map[string]bool),
	}}
	if err := option.Apply(&s, opts); err != nil {
		return nil, fmt.Errorf("coupon: %w", err)
	}
	return &Service{db: db, shared: s.shared}, nil
}

// WithTx returns a copy of the Service whose operations run on db. When db is a bun.Tx,
// they join that transaction (each under a savepoint, so a failed operation undoes only
// its own writes) and commit or roll back with it; otherwise they run in transactions of
// their own. Redemption (Reserve, Confirm, Restore) always joins. Issue joins only when the
// issuer does (JoinsTx); with any other issuer it returns ErrCannotJoinTx inside a
// transaction.
func (s *Service) WithTx(db bun.IDB) *Service {
	return &Service{db: db, shared: s.shared}
}

// JoinsTx reports whether Issue joins the caller's transaction (true for a SQL issuer,
// false for Redis, whose take happens outside SQL). Redemption always joins.
func (s *Service) JoinsTx() bool { return s.issuer.JoinsTx() }

// now returns the clock's time in UTC at microsecond precision.
func (s *Service) now() time.Time { return utc(s.clock()) }
