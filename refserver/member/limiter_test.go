package member

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"
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
