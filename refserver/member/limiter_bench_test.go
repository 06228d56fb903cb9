package member

import (
	"strconv"
	"testing"
	"time"
)

// BenchmarkLimiterNewKeys measures a failed login's limiter step for a key never seen
// before, with 50,000 buckets of recent failures already held (many addresses and login
// IDs, none prunable within the window): the cost of every new key during a distributed
// guessing run. The map's size is reported.
func BenchmarkLimiterNewKeys(b *testing.B) {
	now := time.Now()
	l := newFailureLimiter(5, 15*time.Minute)
	for i := range 50_000 {
		l.take("id held-"+strconv.Itoa(i), now)
	}
	b.ResetTimer()
	for i := range b.N {
		l.take("id new-"+strconv.Itoa(i), now)
	}
	b.ReportMetric(float64(len(l.b)), "buckets")
}

// TestLimiterDropsFullBuckets: buckets back to full (nothing to remember) are dropped
// once the limiter holds limiterPrune of them; buckets of recent failures are kept.
func TestLimiterDropsFullBuckets(t *testing.T) {
	now := time.Now()
	l := newFailureLimiter(5, 15*time.Minute)
	l.take("id failing", now)
	for i := range limiterPrune {
		k := "id ok-" + strconv.Itoa(i)
		l.take(k, now)
		l.refund(k, now)
	}
	// The pass ran when the last ok key came: it dropped every earlier ok key.
	if len(l.b) != 2 {
		t.Fatalf("after a pass %d buckets are held, want 2 (the failing and the last ok key)", len(l.b))
	}
	if d := l.take("id failing", now); d != 0 || l.b["id failing"].tokens != 3 {
		t.Fatalf("the failing key's bucket was lost: wait %v, %v tokens", d, l.b["id failing"].tokens)
	}
}
