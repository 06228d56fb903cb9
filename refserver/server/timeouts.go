package server

import (
	"strconv"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/commerce"
)

// Per-dependency timeouts. Every call to a dependency is bounded well below the request
// timeout, so a dependency that is down, stalled or overloaded costs a request a bounded
// time and is answered 503 dependency_unavailable with Retry-After — never a request that
// hangs until its own deadline.
//
// Redis (COMMERCEKIT_REDIS_TIMEOUT, default DefaultRedisTimeout = 500 ms): the read and
// write timeout of one command; connecting and waiting for a free pooled connection may
// take twice that. go-redis sends a command again once (redisMaxRetries) after a network
// error or a timeout: every script refserver runs is safe to run twice (idempotency
// claims and completions check their token, coupon takes and stock reservations their
// request ID, login and write limits their call's ID), and one retry on a fresh connection hides a connection broken by a Redis
// restart. A command therefore fails within about 2 × (1 s) + the retry pause.
//
// The Redis buckets of the write and login limits remember each call that changed them
// for redisResendWindow = 12 × the Redis timeout + 1 s (7 s by default), so that the
// client's resend of a call whose reply was lost counts once: the first send waits for a
// connection (2 ×), dials (2 ×), writes and reads (1 × each), the retry pause is under
// 512 ms, and the resend waits, dials and writes again (5 ×). No longer: a bucket kept at
// its rate holds every call of that window in Redis (member.WithResendWindow).
//
// MySQL, unless the DSN sets them: timeout (connect) mysqlDialTimeout = 2 s, readTimeout
// and writeTimeout mysqlIOTimeout = 10 s (above the longest statement, below the 30 s
// request timeout), the session's innodb_lock_wait_timeout mysqlLockWait = 5 s (at most
// half the read timeout) and its lock_wait_timeout mysqlMetadataLockWait = 1 s, so that a
// statement waiting for a row lock or a table's metadata lock (an ALTER TABLE, LOCK
// TABLES) is ended by the server (error 1205, answered 503 contention with Retry-After:
// sqlutil.InTx does not wait the same lock again) before the client's read timeout. A row
// lock is contention between requests, worth a wait; a metadata lock is held against
// every request on its table (a LOCK TABLES; an ALTER TABLE waiting for a long
// transaction, which every later statement on the table queues behind), so each of them
// waits at most a second, not five, and under load they do not hold the pool's
// connections five times as long. So a write during a global read lock (FLUSH TABLES
// WITH READ LOCK, which backup tools take) is answered after mysqlMetadataLockWait, not
// the request timeout, while the watch below has not yet found writes held; once it has,
// at once. A start-up migration meeting a held table fails after that second too, and
// the process is started again, rather than holding every statement on the table behind
// it for five. A client that gives up first only closes its socket:
// the server does not notice during a lock wait, and the transaction lives on, holding
// its locks, until the server's own lock wait timeout (50 s by default). Pool: mysqlMaxOpenConns open connections at
// most, idle ones dropped after mysqlConnMaxIdleTime and every one renewed after
// mysqlConnMaxLifetime, so connections broken by a server restart leave the pool quickly.
//
// A MySQL server that does not answer at all (paused, hung, cut off) would hold every
// statement for the whole read timeout: a watch (internal/mysqlwatch, with its defaults)
// pings it every 500 ms on a connection of its own, each ping given 1 s (and connecting
// again after a failed ping given the connect timeout above, 2 s: a busy server that is
// slow to accept connections is not down), and after two unanswered probes in a row
// closes every pooled connection (ending the statements waiting on them) and refuses new
// ones at once, until a probe is answered. So a request on a MySQL that stopped
// answering is answered 503 within about 3.5 s (0.5 + 1 + 2), not the read timeout; the
// gauge commercekit_mysql_up is 0 meanwhile. The watch renews its connection as the pool
// does (mysqlConnMaxLifetime), so that after a failover behind the DSN's address it
// probes the server the pool connects to, not the old one. After each answered ping it
// also runs a write that changes nothing (writeProbe), its lock waits 1 s: a server that
// answers it with a lock wait timeout or a refusal (read_only) holds or refuses every
// write, and until a write probe succeeds every route but a GET (or a HEAD) is answered 503
// dependency_unavailable at once (Server.route), instead of each write holding a pooled
// connection for mysqlLockWait, which under load fills the pool ahead of the reads;
// /readyz says degraded (check mysql_writes) and the gauge commercekit_mysql_writable is 0.
//
// The shared write limit is the exception to the 503: a write asks its Redis with a
// deadline of its own, COMMERCEKIT_RATE_LIMIT_REDIS_TIMEOUT (DefaultRateLimitRedisTimeout
// = 100 ms), well below the command timeout above, and is limited by the process's own
// bucket when it gets no answer in time; the limiter then leaves Redis alone for a
// cool-down (ratelimit.go).
//
// Kafka is never on a request's path: the outbox relay publishes in the background with
// the producer timeouts of saramaoutbox.ProducerConfig.
const (
	DefaultRedisTimeout = 500 * time.Millisecond
	redisMaxRetries     = 1

	mysqlDialTimeout      = 2 * time.Second
	mysqlIOTimeout        = 10 * time.Second
	mysqlLockWait         = 5 * time.Second
	mysqlMetadataLockWait = time.Second
	mysqlMaxOpenConns     = 100
	mysqlConnMaxLifetime  = 5 * time.Minute
	mysqlConnMaxIdleTime  = time.Minute
)

// redisResendWindow is how long the limiters' Redis buckets remember a call (see above).
func redisResendWindow(cfg Config) time.Duration { return 12*cfg.RedisTimeout + time.Second }

// redisOptions returns the go-redis options of cfg with the timeouts above.
func redisOptions(cfg Config) *redis.Options {
	return &redis.Options{
		Addr: cfg.RedisAddr, Password: cfg.RedisPassword, DB: cfg.RedisDB,
		DialTimeout: 2 * cfg.RedisTimeout, ReadTimeout: cfg.RedisTimeout, WriteTimeout: cfg.RedisTimeout,
		PoolTimeout: 2 * cfg.RedisTimeout, MaxRetries: redisMaxRetries,
	}
}

// mysqlTimeouts fills the timeouts the DSN leaves unset with the defaults above.
func mysqlTimeouts(mc *mysql.Config) {
	if mc.Timeout == 0 {
		mc.Timeout = mysqlDialTimeout
	}
	if mc.ReadTimeout == 0 {
		mc.ReadTimeout = mysqlIOTimeout
	}
	if mc.WriteTimeout == 0 {
		mc.WriteTimeout = mysqlIOTimeout
	}
	// Row locks (innodb_lock_wait_timeout, 50 s by default) and metadata locks
	// (lock_wait_timeout: a table locked by LOCK TABLES or an ALTER TABLE, a day by
	// default); sent as SET on every connection.
	for v, wait := range map[string]time.Duration{"innodb_lock_wait_timeout": mysqlLockWait, "lock_wait_timeout": mysqlMetadataLockWait} {
		if _, ok := mc.Params[v]; ok {
			continue
		}
		if mc.Params == nil {
			mc.Params = map[string]string{}
		}
		// Below the read timeout whatever the DSN set it to; the variables are whole seconds.
		wait = max(min(wait, mc.ReadTimeout/2), time.Second)
		mc.Params[v] = strconv.Itoa(int(wait / time.Second))
	}
}

// recoveryTakeover is how long, at most, commerce's recovery loop takes to pick up an order
// whose payment was left in flight: the order must have been untouched for
// DefaultRecoverAfter, and the loop runs every DefaultRecoverEvery.
const recoveryTakeover = commerce.DefaultRecoverAfter + commerce.DefaultRecoverEvery
