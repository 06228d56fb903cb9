package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStockCache: copies live for the TTL, a write drops them, concurrent misses share one
// read, and failures are never kept.
func TestStockCache(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	c := newStockCache(100*time.Millisecond, time.Minute, clock)
	var loads atomic.Int64
	answer := "v1"
	load := func(context.Context) ([]byte, error) { loads.Add(1); return []byte(answer), nil }
	get := func() string {
		b, err := c.get(t.Context(), "p1", load)
		require.NoError(t, err)
		return string(b)
	}

	assert.Equal(t, "v1", get())
	answer = "v2"
	assert.Equal(t, "v1", get(), "a copy younger than the TTL answers")
	assert.Equal(t, int64(1), loads.Load())
	advance(100 * time.Millisecond)
	assert.Equal(t, "v2", get(), "an expired copy is read again")
	answer = "v3"
	c.dropAll()
	assert.Equal(t, "v3", get(), "a write drops every copy")
	assert.Equal(t, int64(3), loads.Load())

	// A failure is not kept: the next read asks again.
	boom := errors.New("redis down")
	c.dropAll()
	_, err := c.get(t.Context(), "p1", func(context.Context) ([]byte, error) { return nil, boom })
	require.ErrorIs(t, err, boom)
	assert.Equal(t, "v3", get())
	assert.Equal(t, int64(4), loads.Load())

	// Concurrent misses share one read.
	c.dropAll()
	release := make(chan struct{})
	var slow atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := c.get(t.Context(), "p2", func(context.Context) ([]byte, error) {
				slow.Add(1)
				<-release
				return []byte("p2"), nil
			})
			assert.NoError(t, err)
			assert.Equal(t, "p2", string(b))
		}()
	}
	require.Eventually(t, func() bool { return slow.Load() == 1 }, 5*time.Second, time.Millisecond)
	close(release) // goroutines arriving later find the fresh copy: still one read
	wg.Wait()
	assert.Equal(t, int64(1), slow.Load(), "one backend read for 20 concurrent misses")
}

// TestStockCacheOff: a zero TTL reads the backend every time.
func TestStockCacheOff(t *testing.T) {
	c := newStockCache(0, time.Minute, time.Now)
	var loads atomic.Int64
	for range 3 {
		_, err := c.get(t.Context(), "p1", func(context.Context) ([]byte, error) { loads.Add(1); return []byte("x"), nil })
		require.NoError(t, err)
	}
	assert.Equal(t, int64(3), loads.Load())
}

// TestStockCacheReadTimeout: the stock route has no request timeout (Route.OwnDeadline), so
// a backend read that does not answer is ended by the cache's timeout, shared or not.
func TestStockCacheReadTimeout(t *testing.T) {
	hang := func(ctx context.Context) ([]byte, error) { <-ctx.Done(); return nil, ctx.Err() }
	for _, ttl := range []time.Duration{0, time.Minute} {
		c := newStockCache(ttl, 20*time.Millisecond, time.Now)
		_, err := c.get(context.Background(), "p1", hang)
		assert.ErrorIs(t, err, context.DeadlineExceeded, "ttl %s", ttl)
	}
}
