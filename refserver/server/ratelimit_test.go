package server

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newLimiter(2, 3, func() time.Time { return now }) // 2/s, burst 3
	for i := range 3 {
		ok, _ := l.allow("a")
		assert.True(t, ok, "burst token %d", i)
	}
	ok, retry := l.allow("a")
	assert.False(t, ok)
	assert.Equal(t, 1, retry)
	ok, _ = l.allow("b")
	assert.True(t, ok, "buckets are per user")

	now = now.Add(500 * time.Millisecond) // one token back
	ok, _ = l.allow("a")
	assert.True(t, ok)
	ok, _ = l.allow("a")
	assert.False(t, ok)

	now = now.Add(time.Hour)
	l.prune(now)
	assert.Empty(t, l.buckets, "refilled buckets are dropped")

	off := newLimiter(0, 1, time.Now)
	for range 100 {
		ok, _ := off.allow("a")
		assert.True(t, ok, "rate 0 disables the limiter")
	}
}
