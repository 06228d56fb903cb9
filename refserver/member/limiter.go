package member

import (
	"math"
	"sync"
	"time"
)

// limiterPrune is how many buckets a limiter holds before full ones are dropped.
const limiterPrune = 10_000

// failureLimiter counts failures per key in token buckets of burst tokens refilled evenly
// over window: a key whose bucket is empty is refused until a token has refilled.
type failureLimiter struct {
	burst  float64
	window time.Duration
	mu     sync.Mutex
	b      map[string]*bucket
	// pruneAt is the size at which full buckets are next dropped: twice the size left by
	// the last pass (at least limiterPrune), so that passes cost O(1) per new key even
	// when most buckets hold recent failures and cannot be dropped.
	pruneAt int
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newFailureLimiter(burst int, window time.Duration) *failureLimiter {
	return &failureLimiter{burst: float64(burst), window: window, b: make(map[string]*bucket), pruneAt: limiterPrune}
}

// rate is the refill in tokens per second.
func (l *failureLimiter) rate() float64 { return l.burst / l.window.Seconds() }

// refilled returns key's bucket brought up to now; l.mu is held.
func (l *failureLimiter) refilled(key string, now time.Time) *bucket {
	b := l.b[key]
	if b == nil {
		if len(l.b) >= l.pruneAt {
			for k, old := range l.b {
				if old.tokens+now.Sub(old.at).Seconds()*l.rate() >= l.burst {
					delete(l.b, k)
				}
			}
			l.pruneAt = max(limiterPrune, 2*len(l.b))
		}
		b = &bucket{tokens: l.burst, at: now}
		l.b[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+max(0, now.Sub(b.at).Seconds())*l.rate())
	b.at = now
	return b
}

// take takes a token from key's bucket and returns 0, or returns how long key must wait
// for one (the bucket is empty).
func (l *failureLimiter) take(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refilled(key, now)
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration(math.Ceil((1 - b.tokens) / l.rate() * float64(time.Second)))
}

// refund gives back a token take took for an attempt that did not fail.
func (l *failureLimiter) refund(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refilled(key, now)
	b.tokens = math.Min(l.burst, b.tokens+1)
}

// reset refills key's bucket.
func (l *failureLimiter) reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.b, key)
}
