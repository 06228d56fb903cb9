package idempotencytest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/payment/idempotency"
)

// testRetention: a response is kept for the retention after it was stored, and ignored
// from then on, whether or not it has been purged: the key is free for any request.
func testRetention(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	var runs atomic.Int64

	first, _, err := e.store.Do(ctx, "s", "k", "fp", charge(&runs))
	require.NoError(t, err)
	e.clock.Advance(suiteRetention - time.Millisecond)
	got, replayed, err := e.store.Do(ctx, "s", "k", "fp", charge(&runs))
	require.NoError(t, err)
	assert.True(t, replayed)
	sameResponse(t, first, got)

	e.clock.Advance(time.Millisecond) // expired now
	_, replayed, err = e.store.Do(ctx, "s", "k", "another-request", charge(&runs))
	require.NoError(t, err)
	assert.False(t, replayed, "an expired key is free for any request")
	assert.EqualValues(t, 2, runs.Load())

	// Retention counts from the response, not from the claim.
	c, err := e.store.Claim(ctx, "s", "slow", "fp")
	require.NoError(t, err)
	e.clock.Advance(5 * time.Second)
	require.NoError(t, e.store.Complete(ctx, c, idempotency.Response{Status: 200}))
	e.clock.Advance(suiteRetention - time.Millisecond)
	_, replayed, err = e.store.Do(ctx, "s", "slow", "fp", mustNotRun(t))
	require.NoError(t, err)
	assert.True(t, replayed)

	// An abandoned claim also expires with the retention, freeing its key for any request.
	_, err = e.store.Claim(ctx, "s", "abandoned", "fp")
	require.NoError(t, err)
	e.clock.Advance(suiteRetention)
	_, replayed, err = e.store.Do(ctx, "s", "abandoned", "another-request", charge(&runs))
	require.NoError(t, err)
	assert.False(t, replayed)
}

// purgeCounter wraps a backend to see what the purger did.
type purgeCounter struct {
	idempotency.Backend
	calls, purged atomic.Int64
}

func (p *purgeCounter) Purge(ctx context.Context, now time.Time) (int64, error) {
	n, err := p.Backend.Purge(ctx, now)
	if err == nil {
		p.purged.Add(n)
		p.calls.Add(1)
	}
	return n, err
}

// testPurge: Purge deletes exactly the records past their retention (done or abandoned),
// keeps the live ones, and RunPurger does it in a loop that stops with its context.
func testPurge(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	var runs atomic.Int64
	expect := func(n int64) int64 {
		if h.ExpiresByItself {
			return 0
		}
		return n
	}

	_, _, err := e.store.Do(ctx, "s", "done-early", "fp", charge(&runs))
	require.NoError(t, err)
	_, err = e.store.Claim(ctx, "s", "abandoned", "fp")
	require.NoError(t, err)
	e.clock.Advance(suiteRetention / 2)
	young, _, err := e.store.Do(ctx, "s", "young", "fp", charge(&runs))
	require.NoError(t, err)

	n, err := e.store.Purge(ctx)
	require.NoError(t, err)
	assert.Equal(t, expect(0), n, "nothing has expired yet")

	e.clock.Advance(suiteRetention / 2)
	n, err = e.store.Purge(ctx)
	require.NoError(t, err)
	assert.Equal(t, expect(2), n)
	n, err = e.store.Purge(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(0), n, "a second purge finds nothing")

	got, replayed, err := e.store.Do(ctx, "s", "young", "fp", mustNotRun(t))
	require.NoError(t, err)
	assert.True(t, replayed, "a live record survives the purge")
	sameResponse(t, young, got)
	for _, key := range []string{"done-early", "abandoned"} {
		_, replayed, err := e.store.Do(ctx, "s", key, "another-request", charge(&runs))
		require.NoError(t, err)
		assert.False(t, replayed, key)
	}

	// The loop: purges at once, stops with its context.
	e.clock.Advance(suiteRetention)
	pc := &purgeCounter{Backend: e.backend}
	store := e.store.WithBackend(pc)
	_, err = store.Purge(ctx) // nothing of the loop yet
	require.NoError(t, err)
	purgedBefore := pc.purged.Load()
	assert.Equal(t, expect(3), purgedBefore)

	_, _, err = e.store.Do(ctx, "s", "loop", "fp", charge(&runs))
	require.NoError(t, err)
	e.clock.Advance(suiteRetention)
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- store.RunPurger(lctx, time.Hour) }()
	deadline := time.Now().Add(bugGuard)
	for pc.calls.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	require.EqualValues(t, 2, pc.calls.Load(), "RunPurger purges once at start")
	assert.Equal(t, expect(1), pc.purged.Load()-purgedBefore)

	assert.ErrorIs(t, store.RunPurger(ctx, 0), idempotency.ErrInvalid)
}
