package coupon

import (
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/uptrace/bun"

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
	warmMu    sync.Mutex          // one warm-up of an issuer's state at a time
}

// Option configures a Service.
type Option func(*shared)

// WithClock sets the clock used for issue windows, expiry and hold deadlines (default
// time.Now).
func WithClock(now func() time.Time) Option {
	return func(s *shared) {
		if now != nil {
			s.clock = now
		}
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *shared) {
		if l != nil {
			s.log = l
		}
	}
}

// WithObserver sets the observer of operations, e.g. a Prometheus adapter (default: none).
func WithObserver(o Observer) Option {
	return func(s *shared) {
		if o != nil {
			s.observer = o
		}
	}
}

// New returns a Service that keeps its records in db (a *bun.DB; MySQL/MariaDB or SQLite,
// with CreateSchema applied) and issues through issuer.
func New(db bun.IDB, issuer Issuer, opts ...Option) *Service {
	sh := &shared{
		issuer:    issuer,
		clock:     time.Now,
		log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		observer:  observe.Nop{},
		templates: make(map[string]Template),
	}
	for _, opt := range opts {
		opt(sh)
	}
	return &Service{db: db, shared: sh}
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
