package server

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/commercekit/commercekit/commerce"
)

// Database drivers.
const (
	DriverSQLite = "sqlite"
	DriverMySQL  = "mysql"
)

// DefaultAddr is the listen address of the default: loopback, since the embedded default
// signs bearer tokens with DevJWTSecret unless COMMERCEKIT_JWT_SECRET is set (see
// Config.Validate). A deployment listens beyond loopback with a secret of its own, e.g.
// COMMERCEKIT_ADDR=:8080.
const DefaultAddr = "127.0.0.1:8080"

// DefaultSQLiteFile is the database file of the embedded default, in the working directory.
const DefaultSQLiteFile = "refserver.db"

// DevJWTSecret signs tokens in the embedded default when COMMERCEKIT_JWT_SECRET is unset. It
// is public, so the server logs a warning whenever it uses it and refuses it (like every one
// of PublishedSecrets) as soon as any external backend is configured.
const DevJWTSecret = "commercekit-dev-secret-do-not-use-in-production"

// Config is everything the server can be told. Every field has a flag and a COMMERCEKIT_
// environment variable (see Settings); a flag wins over the variable, which wins over the
// default. The zero value is not useful: start from Defaults.
type Config struct {
	Addr string

	DBDriver string
	DBDSN    string

	RedisAddr     string
	RedisPassword string
	RedisDB       int
	RedisTimeout  time.Duration
	KafkaBrokers  []string
	PGSimURL      string
	PGTimeout     time.Duration
	WebhookSecret string
	JWTSecret     string
	// MetricsToken, when set, is a bearer token that reads /metrics and nothing else (a
	// Prometheus scrape's credentials); /metrics answers admin tokens either way.
	MetricsToken string

	KafkaTopics []string

	Collector       bool
	MetricsTZ       string
	RollupInterval  time.Duration
	DataPlatformURL string

	OrderExpiry   time.Duration
	PaymentWindow time.Duration
	CancelWindow  time.Duration
	RewardRateBP  int64

	MaxUnpaidPerProduct int64
	MaxUnpaidUnits      int64

	RateLimit float64
	RateBurst int
	// RateLimitRedisTimeout is how long a write waits for the shared write limit's Redis
	// before this process's own bucket limits it (see ratelimit.go).
	RateLimitRedisTimeout time.Duration

	RequestTimeout    time.Duration
	ReadHeaderTimeout time.Duration
	ShutdownTimeout   time.Duration
	MaxBodyBytes      int64
	IdempotencyLock   time.Duration

	PGSimLatency     time.Duration
	PGSimDeclineRate float64

	SeedDemo bool
	LogLevel string
	// StockCacheTTL is how long GET /v1/products/{id}/stock may answer from an in-process copy
	// (0: never). The copy is for display only: reservations always ask the stock backend,
	// and every write request this process serves drops it (see stockcache.go).
	StockCacheTTL time.Duration
	// Pprof serves net/http/pprof under /debug/pprof/ to admin tokens and turns on the block
	// and mutex profiles. Off by default: profiles cost CPU and reveal internals.
	Pprof bool
}

// Defaults returns the embedded default: SQLite in the working directory, every other
// backend in process.
func Defaults() Config {
	return Config{
		Addr:           DefaultAddr,
		DBDriver:       DriverSQLite,
		Collector:      true,
		MetricsTZ:      DefaultMetricsTZ,
		RollupInterval: 5 * time.Second,
		OrderExpiry:    commerce.DefaultOrderExpiry,
		PaymentWindow:  commerce.DefaultPaymentWindow,
		CancelWindow:   commerce.DefaultCancelWindow,
		RewardRateBP:   commerce.DefaultRewardRate,

		MaxUnpaidPerProduct: commerce.DefaultMaxUnpaidPerProduct,
		MaxUnpaidUnits:      commerce.DefaultMaxUnpaidUnits,
		RateLimit:           20,
		RateBurst:           40,
		RequestTimeout:      30 * time.Second,
		StockCacheTTL:       100 * time.Millisecond,
		ReadHeaderTimeout:   5 * time.Second,
		ShutdownTimeout:     30 * time.Second,
		MaxBodyBytes:        1 << 20,
		IdempotencyLock:     60 * time.Second,
		PGTimeout:           10 * time.Second,
		RedisTimeout:        DefaultRedisTimeout,
		SeedDemo:            true,
		LogLevel:            "info",

		RateLimitRedisTimeout: DefaultRateLimitRedisTimeout,
	}
}

// Setting is one configurable value: its flag, its environment variable and how it prints.
type Setting struct {
	Flag   string
	Env    string
	Usage  string
	Secret bool
	value  flag.Value
}

// settings binds every configurable value to a field of c. It is the one list of what the
// server reads: flags, environment variables, the startup printout and the compose test all
// come from it.
func (c *Config) settings() []Setting {
	return []Setting{
		{Flag: "addr", Env: "COMMERCEKIT_ADDR", Usage: "listen address", value: str(&c.Addr)},
		{Flag: "db-driver", Env: "COMMERCEKIT_DB_DRIVER", Usage: "database driver: sqlite or mysql", value: str(&c.DBDriver)},
		{Flag: "db-dsn", Env: "COMMERCEKIT_DB_DSN", Usage: "database DSN (sqlite: a file name, default " + DefaultSQLiteFile + "; mysql: user:password@tcp(host:3306)/db, with timeout=2s, readTimeout=10s, writeTimeout=10s, innodb_lock_wait_timeout=5 and lock_wait_timeout=1 unless it sets them)", Secret: true, value: str(&c.DBDSN)},
		{Flag: "redis-addr", Env: "COMMERCEKIT_REDIS_ADDR", Usage: "Redis address (host:port); set: stock, coupon issuance and idempotency keys in Redis", value: str(&c.RedisAddr)},
		{Flag: "redis-password", Env: "COMMERCEKIT_REDIS_PASSWORD", Usage: "Redis password", Secret: true, value: str(&c.RedisPassword)},
		{Flag: "redis-db", Env: "COMMERCEKIT_REDIS_DB", Usage: "Redis logical database", value: integer(&c.RedisDB)},
		{Flag: "redis-timeout", Env: "COMMERCEKIT_REDIS_TIMEOUT", Usage: "read and write timeout of one Redis command (connecting and waiting for a pooled connection: twice that); a slower Redis answers 503", value: dur(&c.RedisTimeout)},
		{Flag: "kafka-brokers", Env: "COMMERCEKIT_KAFKA_BROKERS", Usage: "Kafka bootstrap brokers, comma-separated; unset: events go to in-process consumers", value: list(&c.KafkaBrokers)},
		{Flag: "pgsim-url", Env: "COMMERCEKIT_PGSIM_URL", Usage: "URL of a PG simulator served by 'refserver pgsim' (loopback); unset: the simulator runs in process", value: str(&c.PGSimURL)},
		{Flag: "pg-timeout", Env: "COMMERCEKIT_PG_TIMEOUT", Usage: "timeout of one call to the PG (calls are retried up to 3 times)", value: dur(&c.PGTimeout)},
		{Flag: "webhook-secret", Env: "COMMERCEKIT_WEBHOOK_SECRET", Usage: "secret the PG signs webhooks with, at least 32 bytes (required unless embedded, where a random one is shared with the in-process simulator)", Secret: true, value: str(&c.WebhookSecret)},
		{Flag: "jwt-secret", Env: "COMMERCEKIT_JWT_SECRET", Usage: "HS256 secret of bearer tokens, at least 32 bytes (required unless embedded)", Secret: true, value: str(&c.JWTSecret)},
		{Flag: "metrics-token", Env: "COMMERCEKIT_METRICS_TOKEN", Usage: "bearer token that reads /metrics and nothing else (a Prometheus scrape's credentials), at least 32 bytes; unset: /metrics answers admin tokens only", Secret: true, value: str(&c.MetricsToken)},
		{Flag: "kafka-topics", Env: "COMMERCEKIT_KAFKA_TOPICS", Usage: "event topics overriding the defaults, comma-separated <event type>=<topic> (default: payment-completed, coupon-issued, points-charged on topics of those names, the other order events on " + commerce.DefaultTopic + ")", value: list(&c.KafkaTopics)},
		{Flag: "collector", Env: "COMMERCEKIT_COLLECTOR", Usage: "with Kafka, run the metrics collector in this process as its consumer group (false when 'refserver collector' runs it); without Kafka it always runs in process", value: boolean(&c.Collector)},
		{Flag: "metrics-tz", Env: "COMMERCEKIT_METRICS_TZ", Usage: "time zone of the sales metrics' day boundaries", value: str(&c.MetricsTZ)},
		{Flag: "rollup-interval", Env: "COMMERCEKIT_ROLLUP_INTERVAL", Usage: "how often changed weeks and months are rolled up from the daily metrics", value: dur(&c.RollupInterval)},
		{Flag: "dataplatform-url", Env: "COMMERCEKIT_DATAPLATFORM_URL", Usage: "URL to POST every paid order to (e.g. 'refserver dataplatform' at http://127.0.0.1:8095/v1/orders); unset: off", value: str(&c.DataPlatformURL)},
		{Flag: "order-expiry", Env: "COMMERCEKIT_ORDER_EXPIRY", Usage: "how long an order waits for payment before it expires", value: dur(&c.OrderExpiry)},
		{Flag: "payment-window", Env: "COMMERCEKIT_PAYMENT_WINDOW", Usage: "how long past its expiry an order's holds last, for a payment started just before", value: dur(&c.PaymentWindow)},
		{Flag: "cancel-window", Env: "COMMERCEKIT_CANCEL_WINDOW", Usage: "how long after payment a paid order may be cancelled", value: dur(&c.CancelWindow)},
		{Flag: "reward-rate-bp", Env: "COMMERCEKIT_REWARD_RATE_BP", Usage: "points earned on payment, in basis points of the card amount (100 = 1%)", value: i64(&c.RewardRateBP)},
		{Flag: "max-unpaid-per-product", Env: "COMMERCEKIT_MAX_UNPAID_PER_PRODUCT", Usage: "units of one product a user's unpaid orders may hold (0: no cap)", value: i64(&c.MaxUnpaidPerProduct)},
		{Flag: "max-unpaid-units", Env: "COMMERCEKIT_MAX_UNPAID_UNITS", Usage: "units in all a user's unpaid orders may hold (0: no cap)", value: i64(&c.MaxUnpaidUnits)},
		{Flag: "rate-limit", Env: "COMMERCEKIT_RATE_LIMIT", Usage: "write requests per second per user (0: unlimited)", value: f64(&c.RateLimit)},
		{Flag: "rate-burst", Env: "COMMERCEKIT_RATE_BURST", Usage: "write requests a user may burst above the rate", value: integer(&c.RateBurst)},
		{Flag: "rate-limit-redis-timeout", Env: "COMMERCEKIT_RATE_LIMIT_REDIS_TIMEOUT", Usage: "how long a write waits for the Redis of the shared write limit; past it this process limits alone, without asking Redis for the next second", value: dur(&c.RateLimitRedisTimeout)},
		{Flag: "request-timeout", Env: "COMMERCEKIT_REQUEST_TIMEOUT", Usage: "deadline of every request's work", value: dur(&c.RequestTimeout)},
		{Flag: "read-header-timeout", Env: "COMMERCEKIT_READ_HEADER_TIMEOUT", Usage: "time allowed to read a request's headers", value: dur(&c.ReadHeaderTimeout)},
		{Flag: "shutdown-timeout", Env: "COMMERCEKIT_SHUTDOWN_TIMEOUT", Usage: "time allowed to drain requests on SIGINT/SIGTERM", value: dur(&c.ShutdownTimeout)},
		{Flag: "max-body-bytes", Env: "COMMERCEKIT_MAX_BODY_BYTES", Usage: "largest request body accepted", value: i64(&c.MaxBodyBytes)},
		{Flag: "idempotency-lock", Env: "COMMERCEKIT_IDEMPOTENCY_LOCK", Usage: "how long a request holds its Idempotency-Key (must exceed the request timeout)", value: dur(&c.IdempotencyLock)},
		{Flag: "pgsim-latency", Env: "COMMERCEKIT_PGSIM_LATENCY", Usage: "latency of the in-process PG simulator", value: dur(&c.PGSimLatency)},
		{Flag: "pgsim-decline-rate", Env: "COMMERCEKIT_PGSIM_DECLINE_RATE", Usage: "fraction of approvals the in-process PG simulator declines", value: f64(&c.PGSimDeclineRate)},
		{Flag: "seed-demo", Env: "COMMERCEKIT_SEED_DEMO", Usage: "create the demo products at start (idempotent)", value: boolean(&c.SeedDemo)},
		{Flag: "log-level", Env: "COMMERCEKIT_LOG_LEVEL", Usage: "debug, info, warn or error", value: str(&c.LogLevel)},
		{Flag: "stock-cache-ttl", Env: "COMMERCEKIT_STOCK_CACHE_TTL", Usage: "how long the public stock read may answer from an in-process copy, for display only (0: never); this process's own writes drop it at once", value: dur(&c.StockCacheTTL)},
		{Flag: "pprof", Env: "COMMERCEKIT_PPROF", Usage: "serve CPU, heap, block and mutex profiles under /debug/pprof/ to admin tokens", value: boolean(&c.Pprof)},
	}
}

// Settings lists every setting the server reads, in order.
func Settings() []Setting {
	c := Defaults()
	return c.settings()
}

// Load builds a Config from the defaults, then the environment (getenv), then the flags in
// args, and validates it.
func Load(args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	c := Defaults()
	fs := flag.NewFlagSet("refserver", flag.ContinueOnError)
	fs.SetOutput(usage)
	for _, s := range c.settings() {
		if v, ok := lookup(getenv, s.Env); ok {
			if err := s.value.Set(v); err != nil {
				return Config{}, fmt.Errorf("%s=%q: %w", s.Env, v, err)
			}
		}
		fs.Var(s.value, s.Flag, s.Usage+" ($"+s.Env+")")
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return c, c.Validate()
}

// lookup reads an environment variable; an empty value counts as unset, so a compose file
// may list every variable and leave the ones it does not use empty.
func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

// Mode names the deployment the Config describes: "embedded" when every backend is in
// process, "full" when every one is external, "mixed" otherwise.
func (c Config) Mode() string {
	external := 0
	for _, b := range []bool{c.DBDriver == DriverMySQL, c.RedisAddr != "", len(c.KafkaBrokers) > 0, c.PGSimURL != ""} {
		if b {
			external++
		}
	}
	switch external {
	case 0:
		return "embedded"
	case 4:
		return "full"
	}
	return "mixed"
}

// Validate checks the Config; it does not connect to anything.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch c.DBDriver {
	case DriverSQLite:
	case DriverMySQL:
		if c.DBDSN == "" {
			bad("COMMERCEKIT_DB_DSN is required with the mysql driver")
		} else if _, err := mysql.ParseDSN(c.DBDSN); err != nil {
			bad("COMMERCEKIT_DB_DSN: %v", err)
		}
	default:
		bad("COMMERCEKIT_DB_DRIVER must be sqlite or mysql, not %q", c.DBDriver)
	}
	errs = append(errs, c.validateSecrets()...)
	if c.RedisDB < 0 {
		bad("COMMERCEKIT_REDIS_DB must be >= 0")
	}
	if _, err := eventTopics(c.KafkaTopics); err != nil {
		bad("%v", err)
	}
	if _, err := metricsLocation(c.MetricsTZ); err != nil {
		bad("%v", err)
	}
	if c.DataPlatformURL != "" {
		if u, err := url.Parse(c.DataPlatformURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("COMMERCEKIT_DATAPLATFORM_URL must be an http(s) URL")
		}
	}
	if c.RewardRateBP < 0 || c.RewardRateBP > 10_000 {
		bad("COMMERCEKIT_REWARD_RATE_BP must be within 0..10000")
	}
	if c.MaxUnpaidPerProduct < 0 || c.MaxUnpaidUnits < 0 {
		bad("COMMERCEKIT_MAX_UNPAID_PER_PRODUCT and COMMERCEKIT_MAX_UNPAID_UNITS must be >= 0 (0: no cap)")
	}
	if c.RateLimit < 0 || c.RateBurst < 1 || c.RateLimit > 1000*float64(c.RateBurst) {
		bad("COMMERCEKIT_RATE_LIMIT must be >= 0, COMMERCEKIT_RATE_BURST >= 1, and the rate at most 1000 × the burst (a bucket refills in 1 ms at least)")
	}
	for name, d := range map[string]time.Duration{
		"COMMERCEKIT_REQUEST_TIMEOUT": c.RequestTimeout, "COMMERCEKIT_READ_HEADER_TIMEOUT": c.ReadHeaderTimeout,
		"COMMERCEKIT_SHUTDOWN_TIMEOUT": c.ShutdownTimeout, "COMMERCEKIT_ORDER_EXPIRY": c.OrderExpiry,
		"COMMERCEKIT_PAYMENT_WINDOW": c.PaymentWindow, "COMMERCEKIT_CANCEL_WINDOW": c.CancelWindow,
		"COMMERCEKIT_PG_TIMEOUT": c.PGTimeout, "COMMERCEKIT_ROLLUP_INTERVAL": c.RollupInterval,
		"COMMERCEKIT_REDIS_TIMEOUT": c.RedisTimeout, "COMMERCEKIT_RATE_LIMIT_REDIS_TIMEOUT": c.RateLimitRedisTimeout,
	} {
		if d <= 0 {
			bad("%s must be positive", name)
		}
	}
	// A command may wait for a connection and run twice (see timeouts.go): that must fit
	// in a request with room to spare.
	if worst := (redisMaxRetries + 1) * 2 * c.RedisTimeout; c.RedisTimeout > 0 && worst*2 > c.RequestTimeout {
		bad("COMMERCEKIT_REDIS_TIMEOUT (%s) is too long for COMMERCEKIT_REQUEST_TIMEOUT (%s): a Redis command may take %s", c.RedisTimeout, c.RequestTimeout, worst)
	}
	// The holds of an order whose payment was started just before its expiry last one
	// payment window more; recovery must be able to finish that payment before they are
	// gone, or it refunds a payment it could have completed.
	if c.PaymentWindow > 0 && c.PaymentWindow <= recoveryTakeover {
		bad("COMMERCEKIT_PAYMENT_WINDOW (%s) must exceed the time recovery takes to pick up a payment left in flight (%s)", c.PaymentWindow, recoveryTakeover)
	}
	if c.IdempotencyLock <= c.RequestTimeout {
		bad("COMMERCEKIT_IDEMPOTENCY_LOCK (%s) must exceed COMMERCEKIT_REQUEST_TIMEOUT (%s)", c.IdempotencyLock, c.RequestTimeout)
	}
	if c.StockCacheTTL < 0 || c.StockCacheTTL > time.Minute {
		bad("COMMERCEKIT_STOCK_CACHE_TTL must be within 0..1m")
	}
	if c.MaxBodyBytes < 1024 {
		bad("COMMERCEKIT_MAX_BODY_BYTES must be at least 1024")
	}
	if c.PGSimLatency < 0 || c.PGSimDeclineRate < 0 || c.PGSimDeclineRate > 1 {
		bad("COMMERCEKIT_PGSIM_LATENCY must be >= 0 and COMMERCEKIT_PGSIM_DECLINE_RATE within 0..1")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("COMMERCEKIT_LOG_LEVEL: %v", err)
	}
	return errors.Join(errs...)
}

// Print writes every setting, one per line, with secrets masked.
func (c Config) Print(w io.Writer) {
	fmt.Fprintf(w, "refserver configuration (mode %s):\n", c.Mode())
	f := c.Fields()
	for i := 0; i < len(f); i += 2 {
		fmt.Fprintf(w, "  %-32s %s\n", f[i], f[i+1])
	}
}

// Fields returns every setting as (variable, printable value) pairs, secrets masked, for a
// structured log line.
func (c Config) Fields() []any {
	var out []any
	for _, s := range c.settings() {
		v := s.value.String()
		switch {
		case s.Secret:
			v = mask(s.Env, v)
		case v == "":
			v = "(unset)"
		}
		out = append(out, s.Env, v)
	}
	return out
}

// mask hides a secret: a MySQL DSN keeps everything but its password, anything else shows
// only whether it is set.
func mask(env, v string) string {
	if v == "" {
		return "(unset)"
	}
	if env == "COMMERCEKIT_DB_DSN" {
		if cfg, err := mysql.ParseDSN(v); err == nil && strings.Contains(v, "@") {
			if cfg.Passwd != "" {
				cfg.Passwd = "****"
			}
			return cfg.FormatDSN()
		}
		if !strings.Contains(v, "@") {
			return v // a SQLite file name holds no secret
		}
	}
	return "****"
}

// value is a flag.Value over a field of Config.
type value[T any] struct {
	p      *T
	parse  func(string) (T, error)
	format func(T) string
}

func (v value[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return err
	}
	*v.p = x
	return nil
}

func (v value[T]) String() string {
	if v.p == nil {
		return ""
	}
	return v.format(*v.p)
}

func str(p *string) flag.Value {
	return value[string]{p, func(s string) (string, error) { return s, nil }, func(s string) string { return s }}
}

func dur(p *time.Duration) flag.Value {
	return value[time.Duration]{p, time.ParseDuration, time.Duration.String}
}

func i64(p *int64) flag.Value {
	return value[int64]{p, func(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) },
		func(x int64) string { return strconv.FormatInt(x, 10) }}
}

func integer(p *int) flag.Value {
	return value[int]{p, strconv.Atoi, strconv.Itoa}
}

func f64(p *float64) flag.Value {
	return value[float64]{p, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) },
		func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }}
}

func boolean(p *bool) flag.Value {
	return boolValue{value[bool]{p, strconv.ParseBool, strconv.FormatBool}}
}

// boolValue lets "-seed-demo" stand for "-seed-demo=true".
type boolValue struct{ value[bool] }

func (boolValue) IsBoolFlag() bool { return true }

func list(p *[]string) flag.Value {
	return value[[]string]{p, func(s string) ([]string, error) {
		var out []string
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
		return out, nil
	}, func(x []string) string { return strings.Join(x, ",") }}
}

// parseLevel reads a log level name.
func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}
