package server

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/refserver/member"
)

// The shared write limit's guard against a Redis that does not answer.
const (
	// DefaultRateLimitRedisTimeout is how long a write waits for the shared write limit's
	// Redis (COMMERCEKIT_RATE_LIMIT_REDIS_TIMEOUT) before it is limited by this process's
	// own bucket instead.
	DefaultRateLimitRedisTimeout = 100 * time.Millisecond
	// rateLimitCooldown is how long the limiter leaves Redis alone after it failed to
	// answer in time: the writes of that time are limited by this process's own buckets
	// without asking it.
	rateLimitCooldown = time.Second
)

// limiter applies the write rate: a token bucket per key holding up to burst tokens,
// refilled at rate per second; a write request takes one. A rate of 0 disables it.
//
// With Redis (full mode) the buckets are in Redis, shared by every instance behind one
// address, so that N instances do not give a user N budgets. When Redis cannot answer,
// this process's own buckets limit alone until it can: the limit guards against abuse,
// and refusing every write while its guard is down would turn a Redis outage into an
// outage of the writes that do not need Redis.
//
// Nor may a Redis that hangs (paused, partitioned: connections accepted, nothing
// answered) make those writes slow. A write waits for Redis timeout at most (far below
// the Redis client's own read timeout), and one that gets no answer in time opens a
// cool-down (rateLimitCooldown, on the limiter's clock) in which writes use this
// process's buckets without asking Redis. After it, one write asks Redis again (a probe),
// once no call to Redis is running any more (a call given up on runs on in the
// background until the Redis client ends it), and the others keep to the process's
// buckets while it is under way; once a write gets an answer in time, the shared buckets
// limit again. A write therefore waits for a hung Redis at most once per cool-down, and
// for timeout at most, and calls do not pile up on it. Redis may still take the token of
// a call given up on when it wakes up, which only makes the limit a little stricter.
type limiter struct {
	rate    float64
	burst   int
	window  time.Duration // the time an empty bucket takes to refill: burst / rate
	timeout time.Duration // how long a write waits for Redis
	now     func() time.Time
	local   *member.MemoryLimiter
	shared  member.Limiter // nil: this process alone
	guard   guard
	calls   sync.WaitGroup // the calls to Redis still running, given up on or not
	stats   limiterStats
}

// limiterStats counts how the limiter answered: the tests read it to count, rather than
// time, the calls that waited for Redis.
type limiterStats struct {
	// asked counts the calls that asked Redis and waited for its answer.
	asked atomic.Int64
	// unanswered counts the asked calls Redis did not answer (in time).
	unanswered atomic.Int64
	// local counts the calls this process's own bucket answered.
	local atomic.Int64
}

// guard decides whether a write asks Redis: always while Redis answers; during a
// cool-down after it did not, never; after the cool-down, one write (a probe), once no
// call to Redis is running any more.
type guard struct {
	mu      sync.Mutex
	until   time.Time // the end of the cool-down; zero: Redis answers
	running int       // calls to Redis still running, given up on or not
}

// admission is how a write is limited.
type admission int

const (
	askShared admission = iota // ask Redis: it answers, or the cool-down is over (a probe)
	localOnly                  // cooling down, or a call to Redis still running: do not ask
)

// admit returns how a write at now is limited. A call to Redis it admits must be ended
// by ended.
func (g *guard) admit(now time.Time) admission {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.until.IsZero() && (g.running > 0 || now.Before(g.until)) {
		return localOnly
	}
	g.running++
	return askShared
}

// ended records that a call to Redis at now has ended, answered or not; failed: it
// failed (then a cool-down begins, as with failed, in the same step, so that no other
// write takes the end of a failed probe for leave to probe again).
func (g *guard) ended(now time.Time, failed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running--
	if failed {
		g.failedLocked(now)
	}
}

// answered records that Redis answered a write in time: the shared buckets limit again.
func (g *guard) answered() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.until = time.Time{}
}

// failed records that Redis did not answer a write at now in time: a cool-down begins
// (or a later one, of a later write, goes on).
func (g *guard) failed(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.failedLocked(now)
}

// failedLocked is failed with g.mu held.
func (g *guard) failedLocked(now time.Time) {
	if until := now.Add(rateLimitCooldown); until.After(g.until) {
		g.until = until
	}
}

// writeLimitPrefix is where the shared write buckets are kept in Redis.
const writeLimitPrefix = "commercekit:writes:"

// newLimiter returns a limiter of rate and burst, its buckets in rdb (configured by opts)
// when it is not nil, where a write waits timeout at most for an answer.
func newLimiter(rate float64, burst int, timeout time.Duration, now func() time.Time, rdb redis.UniversalClient, opts ...member.RedisLimiterOption) *limiter {
	l := &limiter{rate: rate, burst: burst, timeout: timeout, now: now, local: member.NewMemoryLimiter()}
	if rate > 0 {
		l.window = time.Duration(float64(burst) / rate * float64(time.Second))
	}
	if rdb != nil {
		l.shared = member.NewRedisLimiterAt(rdb, writeLimitPrefix, opts...)
	}
	return l
}

// allow takes a token from key's bucket. When there is none it returns false and the
// whole seconds until there will be one.
func (l *limiter) allow(ctx context.Context, key string) (ok bool, retryAfter int) {
	if l.rate <= 0 {
		return true, 0
	}
	now := l.now()
	wait, answered := time.Duration(0), false
	if l.shared != nil {
		if l.guard.admit(now) == askShared {
			wait, answered = l.takeShared(ctx, key, now)
		}
	}
	if !answered {
		l.stats.local.Add(1)
		// The budgets are valid (Config.Validate), so the memory limiter cannot fail.
		wait, _ = l.local.Take(ctx, key, l.burst, l.window, now)
	}
	if wait > 0 {
		return false, int(math.Ceil(wait.Seconds()))
	}
	return true, 0
}

// takeShared takes a token from key's bucket in Redis, waiting l.timeout at most for the
// answer; answered is false when there was none (in time). The call runs on a goroutine
// of its own, so that a Redis client that does not end a call at its context's deadline
// (go-redis does not, unless told to) cannot hold the write up; it tells l.guard when it
// ends.
func (l *limiter) takeShared(ctx context.Context, key string, now time.Time) (wait time.Duration, answered bool) {
	l.stats.asked.Add(1)
	type answer struct {
		wait time.Duration
		err  error
	}
	done := make(chan answer, 1)
	callCtx, cancel := context.WithTimeout(ctx, l.timeout)
	l.calls.Add(1)
	go func() {
		defer l.calls.Done()
		defer cancel()
		wait, err := l.shared.Take(callCtx, key, l.burst, l.window, now)
		// A request that ended first is not Redis's failure.
		l.guard.ended(now, err != nil && ctx.Err() == nil)
		done <- answer{wait, err}
	}()
	timer := time.NewTimer(l.timeout)
	defer timer.Stop()
	select {
	case a := <-done:
		if a.err == nil {
			l.guard.answered()
			return a.wait, true
		}
		// ended began the cool-down, unless the request ended first.
	case <-timer.C:
		l.guard.failed(now)
	case <-ctx.Done():
		// The request is over (the client went away): no answer is needed, and Redis is
		// not to blame.
	}
	l.stats.unanswered.Add(1)
	return 0, false
}

// settle waits until no call to Redis the limiter started is still running, including
// calls it gave up waiting for.
func (l *limiter) settle() { l.calls.Wait() }
