package member

import (
	"context"
	"fmt"
	"math"
	"strconv"
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
//
// now is the caller's clock. A limiter of one process (MemoryLimiter) refills by it: a
// process's calls agree with each other on it, and tests move it; a call may come with a
// now earlier than one already seen (read when its request began), which refills nothing
// again. A limiter shared by instances (RedisLimiter) must not: their clocks need not
// agree, and a bucket refilled and its calls forgotten by each caller's clock would be
// refilled early by an instance ahead and forget calls another instance must still
// remember. It keeps time by a clock of its own, the same for every caller, and ignores
// now.
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

// refilled returns key's bucket brought up to now; l.mu is held. A call whose now is
// before the bucket's time (a late call: Login passes the time its request began, after
// waits) refills nothing and leaves that time, as bucketScript does: moving it back would
// refill the time since then twice.
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
	if now.After(b.at) {
		b.at = now
	}
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

// RedisLimiter keeps the budgets in Redis, one hash per key that expires once its bucket has
// refilled (and the calls it remembers are forgotten): the limiter of full mode, shared by
// every instance. Its token bucket is MemoryLimiter's, run by a script so that concurrent
// attempts from any instance are counted one by one, and a call the Redis client sends again
// after a lost reply is counted once, whatever ran in between (for its resend window: see
// bucketScript and WithResendWindow). Reset forgets a bucket's calls with it: a call resent
// after a Reset counts in the refilled bucket. Its clock is Redis's (the script's TIME), not
// the callers': the now of Take and Refund is ignored, so that instances whose clocks disagree
// (by any amount) share buckets that refill with time and remember every call for the whole
// window. A Redis that restarts empty forgets the budgets: every key starts full again, as
// after a restart of a process with a MemoryLimiter. (go-redis/redis_rate's GCRA loses a
// refund given within the last refill interval, and the failure budgets need exact refunds.)
type RedisLimiter struct {
	rdb    redis.UniversalClient
	prefix string
	resend time.Duration    // how long a call that changed a bucket is remembered
	clock  func() time.Time // nil: Redis's (WithLimiterClock)
}

// RedisLimiterOption configures a RedisLimiter.
type RedisLimiterOption func(*RedisLimiter)

// WithResendWindow sets how long a bucket remembers a call that changed it, so that the
// call sent again by the Redis client after a lost reply counts once (DefaultResendWindow;
// d > 0). It must exceed the longest time the client can take to send a command again
// after sending it first, and no more than needed: a bucket kept at its rate remembers
// every call of that time, about 100 bytes each (a minute of writes at 20/s: 240 KB).
func WithResendWindow(d time.Duration) RedisLimiterOption {
	return func(l *RedisLimiter) {
		if d > 0 {
			l.resend = d
		}
	}
}

// WithLimiterClock replaces the limiter's clock, Redis's, with now: for tests with a fake
// clock, which then move the buckets' time with it. Every RedisLimiter sharing the buckets
// must be given the same clock, or they disagree as the clocks of instances do; a server
// leaves it unset.
func WithLimiterClock(now func() time.Time) RedisLimiterOption {
	return func(l *RedisLimiter) { l.clock = now }
}

// NewRedisLimiter returns a limiter in rdb under keys "commercekit:login:<key>".
func NewRedisLimiter(rdb redis.UniversalClient, opts ...RedisLimiterOption) *RedisLimiter {
	return NewRedisLimiterAt(rdb, "commercekit:login:", opts...)
}

// NewRedisLimiterAt returns a limiter in rdb under keys "<prefix><key>": budgets of
// another kind than failed logins (refserver's write rate) kept apart from them.
func NewRedisLimiterAt(rdb redis.UniversalClient, prefix string, opts ...RedisLimiterOption) *RedisLimiter {
	l := &RedisLimiter{rdb: rdb, prefix: prefix, resend: DefaultResendWindow}
	for _, o := range opts {
		o(l)
	}
	return l
}

// DefaultResendWindow is how long the bucket script remembers a call that changed its
// bucket unless WithResendWindow says otherwise: longer than a go-redis client with its
// default timeouts and three retries takes to send a command again after its reply was
// lost. A resend later than the window counts again. A client with shorter timeouts
// should be given a shorter window (refserver's is a few seconds).
const DefaultResendWindow = time.Minute

// bucketScript takes (ARGV[3] "take") or refunds an attempt of KEYS[1]'s bucket of ARGV[1]
// tokens refilled over ARGV[2] ms, and returns the wait in ms (0: taken or refunded).
// ARGV[4] is the call's ID (a UUID): go-redis sends a command again after a network error,
// and the first may have run, its reply lost; the resend must take nothing more, whatever
// calls of other clients ran on the bucket in between.
//
// Its clock is Redis's (TIME, in Unix ms; ARGV[6] replaces it when not empty, for tests
// with a fake clock: WithLimiterClock), not the caller's: every instance calling it
// shares the buckets, and instances' clocks need not agree. On a caller's clock an
// instance an hour ahead would refill the bucket others emptied, one behind would leave it
// unrefilled, and the remembered calls below would be forgotten early by the calls of an
// instance ahead (a resend counted twice) or kept for as long as the skew. Redis
// replicates a script's effects, not the script, so a replica stores the times the primary
// computed. A Redis clock that steps back holds the refill and keeps the calls longer until
// it has caught up: the limits err on the strict side.
//
// So the bucket's hash remembers, for the resend window after it (ARGV[5], in ms), every
// call that changed it — a take that took, a refund that gave a token back — as a field
// "c:<ID>", and a call finding its field answers 0 (taken, or refunded) and changes nothing.
// A take that was refused changed nothing and is not remembered: its resend is a new
// attempt, which still has at most one effect in all. The remembered calls are also a
// queue, fields "q<n>" from "h" to "n" (exclusive), oldest first, so that each call forgets
// those past the window at the head in amortised constant time; "x" is when the newest is
// forgotten. The memory is therefore bounded by the calls that can change the bucket in the
// window, about 100 bytes each: the bucket's budget bounds its takes that are not refunded,
// but a take and its refund (a successful login) or takes at the refill rate (writes)
// repeat at the caller's rate, so the window is kept as short as the Redis client allows
// (WithResendWindow). The key expires once the bucket has refilled and its calls are
// forgotten; a full bucket remembering no call is no key. One round trip per call, and one
// key, as before.
var bucketScript = redis.NewScript(`
local id = 'c:' .. ARGV[4]
if redis.call('HEXISTS', KEYS[1], id) == 1 then
  return 0
end
local now = tonumber(ARGV[6])
if not now then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
local burst, window, resend = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
local rate = burst / window
local v = redis.call('HMGET', KEYS[1], 't', 'a', 'h', 'n', 'x')
local tokens, at = tonumber(v[1]), tonumber(v[2])
local head, tail, last = tonumber(v[3]) or 0, tonumber(v[4]) or 0, tonumber(v[5]) or 0
if not tokens then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
at = math.max(at, now)
local wait, changed = 0, false
if ARGV[3] == 'take' then
  if tokens >= 1 then tokens, changed = tokens - 1, true else wait = math.ceil((1 - tokens) / rate) end
elseif tokens < burst then
  tokens, changed = math.min(burst, tokens + 1), true
end
while head < tail do
  local old = redis.call('HGET', KEYS[1], 'q' .. head)
  local forget = old and tonumber(redis.call('HGET', KEYS[1], old))
  if forget and forget > now then break end
  redis.call('HDEL', KEYS[1], 'q' .. head)
  if old then redis.call('HDEL', KEYS[1], old) end
  head = head + 1
end
if head == tail then head, tail = 0, 0 end
if changed then
  redis.call('HSET', KEYS[1], 'q' .. tail, id, id, now + resend)
  tail, last = tail + 1, math.max(last, now + resend)
end
if tokens >= burst and head == tail then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'a', at, 'h', head, 'n', tail, 'x', last)
  redis.call('PEXPIRE', KEYS[1], math.max(math.ceil((burst - tokens) / rate), last - now, 1))
end
return wait
`)

func (l *RedisLimiter) run(ctx context.Context, op, key string, burst int, window time.Duration) (time.Duration, error) {
	if err := checkBudget(burst, window); err != nil {
		return 0, err
	}
	clock := "" // Redis's
	if l.clock != nil {
		clock = strconv.FormatInt(l.clock().UnixMilli(), 10)
	}
	ms, err := bucketScript.Run(ctx, l.rdb, []string{l.prefix + key}, burst, window.Milliseconds(), op,
		uuid.NewString(), l.resend.Milliseconds(), clock).Int64()
	if err != nil {
		return 0, errcode.Unavailable("redis", fmt.Errorf("member: limits %s: %w", l.prefix, err))
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// Take implements Limiter, on Redis's clock: now is ignored.
func (l *RedisLimiter) Take(ctx context.Context, key string, burst int, window time.Duration, _ time.Time) (time.Duration, error) {
	return l.run(ctx, "take", key, burst, window)
}

// Refund implements Limiter, on Redis's clock: now is ignored.
func (l *RedisLimiter) Refund(ctx context.Context, key string, burst int, window time.Duration, _ time.Time) error {
	_, err := l.run(ctx, "refund", key, burst, window)
	return err
}

// Reset implements Limiter.
func (l *RedisLimiter) Reset(ctx context.Context, key string) error {
	if err := l.rdb.Del(ctx, l.prefix+key).Err(); err != nil {
		return errcode.Unavailable("redis", fmt.Errorf("member: login limits: %w", err))
	}
	return nil
}
