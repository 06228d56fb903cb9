package member

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/errcode"
)

// Limiter keeps the budgets of failed logins: burst attempts per key, refilled evenly over
// window (a token bucket). Login takes an attempt before it checks a password and gives it
// back when the login succeeds, so attempts sent at once are limited like attempts sent one
// by one. Services sharing a Limiter share the budgets: every instance of a server behind
// one address needs the same one (NewRedisLimiter), or an attacker gets a budget per
// instance.
type Limiter interface {
	// Take takes an attempt from key's budget and returns 0, or how long until one is
	// available. An error means the limiter could not answer; Login then refuses the
	// attempt with it (fails closed). A budget of less than one attempt or a window under a
	// millisecond is a *ValidationError.
	Take(ctx context.Context, key string, burst int, window time.Duration, now time.Time) (time.Duration, error)
	// Refund gives back an attempt Take took.
	Refund(ctx context.Context, key string, burst int, window time.Duration, now time.Time) error
	// Reset refills key's budget.
	Reset(ctx context.Context, key string) error
}

// checkBudget refuses a budget no bucket can hold.
func checkBudget(burst int, window time.Duration) error {
	if burst < 1 || window < time.Millisecond {
		return &ValidationError{Field: "budget", Reason: fmt.Sprintf("%d per %v: need at least 1 per 1ms", burst, window)}
	}
	return nil
}

// limiterPrune is how many buckets a MemoryLimiter holds before full ones are dropped.
const limiterPrune = 10_000

// MemoryLimiter is a Limiter in the process's memory: the default, and right for one
// instance only.
type MemoryLimiter struct {
	mu sync.Mutex
	b  map[string]*bucket
	// pruneAt is the size at which full buckets are next dropped: twice the size left by
	// the last pass (at least limiterPrune), so that passes cost O(1) per new key even
	// when most buckets hold recent failures and cannot be dropped.
	pruneAt int
}

type bucket struct {
	tokens, burst float64
	rate          float64 // tokens per second
	at            time.Time
}

// full reports whether b has refilled by now.
func (b *bucket) full(now time.Time) bool {
	return b.tokens+now.Sub(b.at).Seconds()*b.rate >= b.burst
}

// NewMemoryLimiter returns an empty MemoryLimiter.
func NewMemoryLimiter() *MemoryLimiter {
	return &MemoryLimiter{b: make(map[string]*bucket), pruneAt: limiterPrune}
}

// refilled returns key's bucket brought up to now; l.mu is held.
func (l *MemoryLimiter) refilled(key string, burst int, window time.Duration, now time.Time) *bucket {
	b := l.b[key]
	if b == nil {
		if len(l.b) >= l.pruneAt {
			for k, old := range l.b {
				if old.full(now) {
					delete(l.b, k)
				}
			}
			l.pruneAt = max(limiterPrune, 2*len(l.b))
		}
		b = &bucket{tokens: float64(burst), at: now}
		l.b[key] = b
	}
	b.burst, b.rate = float64(burst), float64(burst)/window.Seconds()
	b.tokens = math.Min(b.burst, b.tokens+max(0, now.Sub(b.at).Seconds())*b.rate)
	b.at = now
	return b
}

// Take implements Limiter.
func (l *MemoryLimiter) Take(_ context.Context, key string, burst int, window time.Duration, now time.Time) (time.Duration, error) {
	if err := checkBudget(burst, window); err != nil {
		return 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refilled(key, burst, window, now)
	if b.tokens >= 1 {
		b.tokens--
		return 0, nil
	}
	return time.Duration(math.Ceil((1 - b.tokens) / b.rate * float64(time.Second))), nil
}

// Refund implements Limiter.
func (l *MemoryLimiter) Refund(_ context.Context, key string, burst int, window time.Duration, now time.Time) error {
	if err := checkBudget(burst, window); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refilled(key, burst, window, now)
	b.tokens = math.Min(b.burst, b.tokens+1)
	return nil
}

// Reset implements Limiter.
func (l *MemoryLimiter) Reset(_ context.Context, key string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.b, key)
	return nil
}

// RedisLimiter keeps the budgets in Redis, one hash per key that expires once its bucket
// has refilled: the limiter of full mode, shared by every instance. Its token bucket is
// MemoryLimiter's, run by a script so that concurrent attempts from any instance are
// counted one by one. A Redis that restarts empty forgets the budgets: every key starts
// full again, as after a restart of a process with a MemoryLimiter. (go-redis/redis_rate's
// GCRA loses a refund given within the last refill interval, and the failure budgets need
// exact refunds.)
type RedisLimiter struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewRedisLimiter returns a limiter in rdb under keys "commercekit:login:<key>".
func NewRedisLimiter(rdb redis.UniversalClient) *RedisLimiter {
	return NewRedisLimiterAt(rdb, "commercekit:login:")
}

// NewRedisLimiterAt returns a limiter in rdb under keys "<prefix><key>": budgets of
// another kind than failed logins (refserver's write rate) kept apart from them.
func NewRedisLimiterAt(rdb redis.UniversalClient, prefix string) *RedisLimiter {
	return &RedisLimiter{rdb: rdb, prefix: prefix}
}

// bucketScript takes (ARGV[4] "take") or refunds an attempt of KEYS[1]'s bucket of ARGV[1]
// tokens refilled over ARGV[2] ms, at ARGV[3] (Unix ms), and returns the wait in ms (0:
// taken or refunded). A full bucket is no key. ARGV[5] is the call's ID, kept with the
// bucket with its answer: the same call sent again — go-redis sends a command again once
// after a network error, and the first may have run, its reply lost — answers as the first
// did and takes nothing more. (Only the last call of a bucket is kept: a call of another
// client on the same bucket between a call and its resend makes the resend count again.
// A refund that filled the bucket, resent, finds it full and changes nothing.)
var bucketScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'op') == ARGV[5] then
  return tonumber(redis.call('HGET', KEYS[1], 'w'))
end
local burst, window, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rate = burst / window
local v = redis.call('HMGET', KEYS[1], 't', 'a')
local tokens, at = tonumber(v[1]), tonumber(v[2])
if not tokens then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
at = math.max(at, now)
local wait = 0
if ARGV[4] == 'take' then
  if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end
else
  tokens = math.min(burst, tokens + 1)
end
if tokens >= burst then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'a', at, 'op', ARGV[5], 'w', wait)
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate))
end
return wait
`)

func (l *RedisLimiter) run(ctx context.Context, op, key string, burst int, window time.Duration, now time.Time) (time.Duration, error) {
	if err := checkBudget(burst, window); err != nil {
		return 0, err
	}
	ms, err := bucketScript.Run(ctx, l.rdb, []string{l.prefix + key}, burst, window.Milliseconds(), now.UnixMilli(), op,
		uuid.NewString()).Int64()
	if err != nil {
		return 0, errcode.Unavailable("redis", fmt.Errorf("member: limits %s: %w", l.prefix, err))
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// Take implements Limiter.
func (l *RedisLimiter) Take(ctx context.Context, key string, burst int, window time.Duration, now time.Time) (time.Duration, error) {
	return l.run(ctx, "take", key, burst, window, now)
}

// Refund implements Limiter.
func (l *RedisLimiter) Refund(ctx context.Context, key string, burst int, window time.Duration, now time.Time) error {
	_, err := l.run(ctx, "refund", key, burst, window, now)
	return err
}

// Reset implements Limiter.
func (l *RedisLimiter) Reset(ctx context.Context, key string) error {
	if err := l.rdb.Del(ctx, l.prefix+key).Err(); err != nil {
		return errcode.Unavailable("redis", fmt.Errorf("member: login limits: %w", err))
	}
	return nil
}
