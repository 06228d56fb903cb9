package server

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/refserver/member"
)

// limiter applies the write rate: a token bucket per key holding up to burst tokens,
// refilled at rate per second; a write request takes one. A rate of 0 disables it.
//
// With Redis (full mode) the buckets are in Redis, shared by every instance behind one
// address, so that N instances do not give a user N budgets. When Redis cannot answer,
// this process's own buckets limit alone until it can: the limit guards against abuse,
// and refusing every write while its guard is down would turn a Redis outage into an
// outage of the writes that do not need Redis.
type limiter struct {
	rate   float64
	burst  int
	window time.Duration // the time an empty bucket takes to refill: burst / rate
	now    func() time.Time
	local  *member.MemoryLimiter
	shared member.Limiter // nil: this process alone
	stats  limiterStats
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

// writeLimitPrefix is where the shared write buckets are kept in Redis.
const writeLimitPrefix = "commercekit:writes:"

// newLimiter returns a limiter of rate and burst, its buckets in rdb when it is not nil.
func newLimiter(rate float64, burst int, now func() time.Time, rdb redis.UniversalClient) *limiter {
	l := &limiter{rate: rate, burst: burst, now: now, local: member.NewMemoryLimiter()}
	if rate > 0 {
		l.window = time.Duration(float64(burst) / rate * float64(time.Second))
	}
	if rdb != nil {
		l.shared = member.NewRedisLimiterAt(rdb, writeLimitPrefix)
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
	wait, err := time.Duration(0), error(nil)
	if l.shared != nil {
		l.stats.asked.Add(1)
		if wait, err = l.shared.Take(ctx, key, l.burst, l.window, now); err != nil {
			l.stats.unanswered.Add(1)
		}
	}
	if l.shared == nil || err != nil {
		l.stats.local.Add(1)
		// The budgets are valid (Config.Validate), so the memory limiter cannot fail.
		wait, _ = l.local.Take(ctx, key, l.burst, l.window, now)
	}
	if wait > 0 {
		return false, int(math.Ceil(wait.Seconds()))
	}
	return true, 0
}

// settle waits until no call to Redis the limiter started is still running: every call
// returns its answer to the request that asked, so there is none.
func (l *limiter) settle() {}
