package member

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/internal/testenv"
)

var ctx = context.Background()

// BenchmarkLimiterNewKeys measures a failed login's limiter step for a key never seen
// before, with 50,000 buckets of recent failures already held (many addresses and login
// IDs, none prunable within the window): the cost of every new key during a distributed
// guessing run. The map's size is reported.
func BenchmarkLimiterNewKeys(b *testing.B) {
	now := time.Now()
	l := NewMemoryLimiter()
	for i := range 50_000 {
		_, _ = l.Take(ctx, "id held-"+strconv.Itoa(i), 5, 15*time.Minute, now)
	}
	b.ResetTimer()
	for i := range b.N {
		_, _ = l.Take(ctx, "id new-"+strconv.Itoa(i), 5, 15*time.Minute, now)
	}
	b.ReportMetric(float64(len(l.b)), "buckets")
}

// TestLimiterDropsFullBuckets: buckets back to full (nothing to remember) are dropped
// once the limiter holds limiterPrune of them; buckets of recent failures are kept.
func TestLimiterDropsFullBuckets(t *testing.T) {
	now := time.Now()
	l := NewMemoryLimiter()
	_, _ = l.Take(ctx, "id failing", 5, 15*time.Minute, now)
	for i := range limiterPrune {
		k := "id ok-" + strconv.Itoa(i)
		_, _ = l.Take(ctx, k, 5, 15*time.Minute, now)
		_ = l.Refund(ctx, k, 5, 15*time.Minute, now)
	}
	// The pass ran when the last ok key came: it dropped every earlier ok key.
	if len(l.b) != 2 {
		t.Fatalf("after a pass %d buckets are held, want 2 (the failing and the last ok key)", len(l.b))
	}
	if d, _ := l.Take(ctx, "id failing", 5, 15*time.Minute, now); d != 0 || l.b["id failing"].tokens != 3 {
		t.Fatalf("the failing key's bucket was lost: wait %v, %v tokens", d, l.b["id failing"].tokens)
	}
}

// TestLimitersRefuseEmptyBudgets: a budget no bucket can hold is a *ValidationError, on
// both limiters, before anything is counted.
func TestLimitersRefuseEmptyBudgets(t *testing.T) {
	for _, l := range []Limiter{NewMemoryLimiter(), NewRedisLimiter(nil)} {
		for _, b := range []struct {
			burst  int
			window time.Duration
		}{{0, time.Minute}, {1, 0}, {1, time.Microsecond}} {
			_, err := l.Take(ctx, "k", b.burst, b.window, time.Now())
			if !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("%T Take(%d, %v): %v, want ErrInvalidRequest", l, b.burst, b.window, err)
			}
			if err := l.Refund(ctx, "k", b.burst, b.window, time.Now()); !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("%T Refund(%d, %v): %v, want ErrInvalidRequest", l, b.burst, b.window, err)
			}
		}
	}
}

// TestRedisLimiterResendAfterAnotherCall: a call of the bucket script sent again (go-redis
// resends a command whose reply it lost) answers as it first did and counts once, even
// when calls of other clients on the same bucket ran in between: a take, a refund that
// filled the bucket, a take refused. The login limits and the write limits (refserver's
// prefix) share the script; both are checked, with the exact tokens left.
func TestRedisLimiterResendAfterAnotherCall(t *testing.T) {
	rdb := testenv.Redis(t)
	now := time.Now()
	const burst, window = 3, time.Hour
	for _, prefix := range []string{"commercekit:login:", "commercekit:writes:"} {
		t.Run(prefix, func(t *testing.T) {
			key := prefix + "id bob"
			call := func(op, id string) int64 {
				t.Helper()
				ms, err := bucketScript.Run(ctx, rdb, []string{key}, burst, window.Milliseconds(), op, id, DefaultResendWindow.Milliseconds(), now.UnixMilli()).Int64()
				if err != nil {
					t.Fatalf("%s %s: %v", op, id, err)
				}
				return ms
			}
			tokens := func() string {
				t.Helper()
				v, err := rdb.HGet(ctx, key, "t").Result()
				if errors.Is(err, redis.Nil) { // a full bucket that remembers no call is no key
					return strconv.Itoa(burst)
				}
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			steps := []struct {
				op, id string
				wait   bool
				tokens string
			}{
				{"take", "a", false, "2"},
				{"take", "b", false, "1"},   // another client's call
				{"take", "a", false, "1"},   // a's resend: counted once
				{"refund", "r", false, "2"}, // another client's refund
				{"take", "b", false, "2"},   // b's resend, after two calls
				{"take", "c", false, "1"},
				{"take", "d", false, "0"},
				{"take", "e", true, "0"},    // refused
				{"take", "d", false, "0"},   // d's resend, after a refused call: still taken once, answered as taken
				{"refund", "f", false, "1"}, // refunds fill the bucket
				{"refund", "g", false, "2"},
				{"refund", "h", false, "3"},
				{"take", "i", false, "2"},
				{"refund", "h", false, "2"}, // h's resend: the bucket got h's token once
				{"take", "i", false, "2"},   // i's resend
			}
			for i, s := range steps {
				wait := call(s.op, s.id)
				if (wait > 0) != s.wait || tokens() != s.tokens {
					t.Fatalf("step %d (%s %s): wait %d ms, %s tokens; want wait %v, %s tokens", i, s.op, s.id, wait, tokens(), s.wait, s.tokens)
				}
			}
			// A call past DefaultResendWindow forgets the calls before it: the bucket holds its
			// state (t, a, h, n, x) and that call alone (its queue entry and its ID).
			later := now.Add(DefaultResendWindow + time.Millisecond)
			if _, err := bucketScript.Run(ctx, rdb, []string{key}, burst, window.Milliseconds(), "take", "j", DefaultResendWindow.Milliseconds(), later.UnixMilli()).Result(); err != nil {
				t.Fatal(err)
			}
			fields, err := rdb.HKeys(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(fields)
			if want := []string{"a", "c:j", "h", "n", "q0", "t", "x"}; !slices.Equal(fields, want) {
				t.Fatalf("after a call past the resend window the bucket holds %q, want %q", fields, want)
			}
		})
	}
}

// TestLimiterLateCallsRefillNothingTwice: a MemoryLimiter's calls arrive with the time
// their request began, not in that order: Login reads the clock once, then takes the login
// ID's attempt, reads the member and waits for the address's turn (up to the request's
// deadline, or until its client goes away, which an attacker can do at will) before it
// refunds that attempt with the time it began. Such a late call must not move the bucket
// back in time, or the next call refills the time since then again: here 4 attempts
// (3 at once, 1 refilled an hour later) would be 5.
func TestLimiterLateCallsRefillNothingTwice(t *testing.T) {
	const key, burst, window = "id victim", 3, 3 * time.Hour // one attempt back per hour
	t0 := time.Now()
	l := NewMemoryLimiter()
	for i := range burst { // the last one's request waits for its turn
		if d, err := l.Take(ctx, key, burst, window, t0); d != 0 || err != nil {
			t.Fatalf("attempt %d at t0: wait %v, %v", i+1, d, err)
		}
	}
	later := t0.Add(time.Hour)
	if d, err := l.Take(ctx, key, burst, window, later); d != 0 || err != nil {
		t.Fatalf("the attempt refilled an hour later: wait %v, %v", d, err)
	}
	// The waiting request goes away: its attempt is refunded, with the time it began.
	if err := l.Refund(ctx, key, burst, window, t0); err != nil {
		t.Fatal(err)
	}
	if d, err := l.Take(ctx, key, burst, window, later); d != 0 || err != nil {
		t.Fatalf("the attempt refunded, taken again: wait %v, %v", d, err)
	}
	if d, err := l.Take(ctx, key, burst, window, later); d == 0 || err != nil {
		t.Fatalf("a 5th attempt within the hour was taken (wait %v, %v): the late refund moved the bucket back to t0, and the hour was refilled twice", d, err)
	}
}
