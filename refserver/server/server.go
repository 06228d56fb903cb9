package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/member"
)

// Server is the reference HTTP server: the routes of Routes over a commerce.Service built
// from a Config, its background loops, and graceful shutdown.
type Server struct {
	cfg Config
	log *slog.Logger
	now func() time.Time
	// ownClock: WithClock gave now (a test's clock), which then runs the shared buckets in
	// Redis too; else they keep Redis's clock, not this instance's.
	ownClock bool
	metrics  *metrics
	auth     *authenticator
	scrape   scrapeToken
	limiter  *limiter
	idem     *idempotency.Store
	svc      *commerce.Service
	st       *stack
	checks   []check
	handler  http.Handler
	stock    *stockCache
	// writable returns nil while the database takes writes, as far as its watch found,
	// and otherwise the error to refuse a write with; nil without a watch (SQLite).
	writable func() error

	// Members, sessions and carts (members.go); memberOpts configure the member service.
	members    *member.Service
	carts      *cart.Service
	memberOpts []member.Option

	draining  atomic.Bool
	closeOnce sync.Once
}

// Option configures a Server. An option given an invalid value makes New fail with an
// *errcode.InvalidError naming the option.
type Option func(*settings)

// settings is what the options of New fill.
type settings struct {
	option.Errors
	*Server
}

// WithLogger sets the logger (default: discard). It must not be nil.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.log, "WithLogger", l) }
}

// WithClock sets the clock of token expiry checks and the rate limiter (default time.Now).
// It must not be nil. It is for tests: it also runs the buckets of the write and login
// limits kept in Redis, which without it keep Redis's clock (member.RedisLimiter), so
// that instances whose clocks disagree share them rightly.
func WithClock(now func() time.Time) Option {
	return func(s *settings) {
		option.NotNil(&s.Errors, &s.now, "WithClock", now)
		s.ownClock = true
	}
}

// redisLimiterOptions configures the buckets of the write and login limits in Redis.
func (s *Server) redisLimiterOptions() []member.RedisLimiterOption {
	opts := []member.RedisLimiterOption{member.WithResendWindow(redisResendWindow(s.cfg))}
	if s.ownClock {
		opts = append(opts, member.WithLimiterClock(s.now))
	}
	return opts
}

// New builds a Server from cfg: it opens the backends, creates the tables, composes commerce
// and seeds the demo catalogue if asked. It does not listen yet (Run, Serve or Handler) and
// starts no background loop (Start). Close releases what it opened.
func New(ctx context.Context, cfg Config, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: time.Now}
	set := settings{Server: s}
	if err := option.Apply(&set, opts); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	secret := cfg.JWTSecret
	if secret == "" {
		secret = DevJWTSecret
		s.log.Warn("COMMERCEKIT_JWT_SECRET is unset: bearer tokens are signed with the PUBLIC development secret; " +
			"anyone can mint an admin token. Embedded development use only.")
	}
	s.auth = newAuthenticator([]byte(secret), s.now)
	s.scrape = newScrapeToken(cfg.MetricsToken)
	s.stock = newStockCache(cfg.StockCacheTTL, cfg.RequestTimeout, s.now)
	s.metrics = newMetrics(s.code)
	st, err := buildStack(ctx, cfg, s.log, s.metrics)
	if err != nil {
		return nil, err
	}
	s.st, s.svc, s.idem, s.checks, s.writable = st, st.svc, st.idem, st.checks, st.writable
	s.limiter = newLimiter(cfg.RateLimit, cfg.RateBurst, cfg.RateLimitRedisTimeout, s.now, nil)
	if st.rdb != nil { // not a nil *redis.Client in the interface
		s.limiter = newLimiter(cfg.RateLimit, cfg.RateBurst, cfg.RateLimitRedisTimeout, s.now, st.rdb,
			s.redisLimiterOptions()...)
	}
	if err := s.buildMembers(ctx, []byte(secret)); err != nil {
		st.close(s.log)
		return nil, err
	}
	if cfg.SeedDemo {
		if err := s.seed(ctx); err != nil {
			st.close(s.log)
			return nil, fmt.Errorf("seeding the demo catalogue: %w", err)
		}
	}
	mux := http.NewServeMux()
	rts := s.routes()
	if cfg.Pprof {
		rts = append(rts, s.pprofRoute())
	}
	for _, rt := range rts {
		mux.Handle(rt.Pattern(), s.route(rt))
	}
	s.handler = s.outer(mux)
	return s, nil
}

// Handler returns the HTTP handler of every route, with its middleware.
func (s *Server) Handler() http.Handler { return s.handler }

// Commerce returns the composed commerce.Service (for embedded drivers and tests: Audit).
func (s *Server) Commerce() *commerce.Service { return s.svc }

// Simulator returns the in-process PG simulator, or nil when the PG is reached over HTTP:
// tests and demos script its faults and declines.
func (s *Server) Simulator() *pgsim.Simulator { return s.st.sim }

// Start runs the background work until ctx is done: commerce's loops (outbox relay,
// payment reconciler, outbox cleaner, order expiry, recovery, the leaves' sweepers) and the
// server's own (purging expired idempotency keys). The returned function waits for them to
// stop after ctx is done.
func (s *Server) Start(ctx context.Context) (wait func()) {
	var wg sync.WaitGroup
	loops := append([]func(context.Context) error{s.svc.Run}, s.st.loops...)
	for _, loop := range loops {
		wg.Go(func() {
			if err := ignoreCanceled(loop(ctx)); err != nil {
				s.log.Error("background loop stopped", "err", err)
			}
		})
	}
	return wg.Wait
}

// Run listens on the configured address and serves until ctx is done, then shuts down
// gracefully (see Serve).
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		s.Close()
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln, with the background loops running, until ctx is done. Then it
// shuts down in order: /readyz turns 503, the listener closes and in-flight requests drain
// (up to the shutdown timeout), the background loops stop, and the stores close.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	loopCtx, stopLoops := context.WithCancel(context.Background())
	wait := s.Start(loopCtx)
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.RequestTimeout,
		WriteTimeout:      s.cfg.RequestTimeout + 5*time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("refserver listening", "addr", ln.Addr().String(), "mode", s.cfg.Mode())

	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		s.log.Info("shutting down: draining requests", "timeout", s.cfg.ShutdownTimeout.String())
		s.draining.Store(true)
		shutdownCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		err = srv.Shutdown(shutdownCtx)
		cancel()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	s.log.Info("shutting down: stopping background loops")
	stopLoops()
	wait()
	s.Close()
	s.log.Info("stopped")
	return err
}

// Close releases the backends. Call it once the background loops have stopped.
func (s *Server) Close() {
	s.closeOnce.Do(func() { s.st.close(s.log) })
}
