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

// testCrashTakeover: a request that claimed its key and crashed (never completed nor
// released) blocks the key with ErrInProgress until its lock timeout; from then on a
// retry of the same request takes the key over and runs, while a different request is
// still refused.
func testCrashTakeover(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	var runs atomic.Int64

	crashed, err := e.store.Claim(ctx, "s", "k", "fp")
	require.NoError(t, err)
	require.False(t, crashed.Replayed)
	require.NotEmpty(t, crashed.Token)
	assert.Equal(t, suiteStart.Add(suiteLockTimeout), crashed.LockedUntil)

	_, _, err = e.store.Do(ctx, "s", "k", "fp", charge(&runs))
	assertKeyError(t, err, idempotency.ErrInProgress, "s", "k")
	status, _ := idempotency.HTTPStatus(err)
	assert.Equal(t, 409, status)

	e.clock.Advance(suiteLockTimeout - time.Millisecond)
	_, _, err = e.store.Do(ctx, "s", "k", "fp", charge(&runs))
	assertKeyError(t, err, idempotency.ErrInProgress, "s", "k")

	e.clock.Advance(time.Millisecond) // the lock expires now
	_, _, err = e.store.Do(ctx, "s", "k", "other-fp", charge(&runs))
	assertKeyError(t, err, idempotency.ErrKeyReused, "s", "k")
	require.Zero(t, runs.Load())

	resp, replayed, err := e.store.Do(ctx, "s", "k", "fp", charge(&runs))
	require.NoError(t, err)
	assert.False(t, replayed)
	assert.EqualValues(t, 1, runs.Load())
	got, replayed, err := e.store.Do(ctx, "s", "k", "fp", charge(&runs))
	require.NoError(t, err)
	assert.True(t, replayed)
	sameResponse(t, resp, got)

	// The low-level Claim says it took over, with a new token and lock.
	first, err := e.store.Claim(ctx, "s", "k2", "fp")
	require.NoError(t, err)
	second := e.takeOver(t, "k2")
	assert.False(t, first.TookOver)
	assert.NotEqual(t, first.Token, second.Token)
	assert.Equal(t, e.clock.Now().Add(suiteLockTimeout), second.LockedUntil)
	_, err = e.store.Claim(ctx, "s", "k2", "fp")
	assertKeyError(t, err, idempotency.ErrInProgress, "s", "k2")
}

// takeOver lets the lock on key expire and claims key again: the new claim takes over.
func (e *env) takeOver(t *testing.T, key string) idempotency.Claim {
	t.Helper()
	e.clock.Advance(suiteLockTimeout)
	c, err := e.store.Claim(t.Context(), "s", key, "fp")
	require.NoError(t, err)
	require.True(t, c.TookOver)
	return c
}

// testFencing: a stale owner coming back after its lock was taken over can neither store
// its response nor release the new owner's claim; a lock that expired without a takeover
// still completes; a claim completes at most once.
func testFencing(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	stale, err := e.store.Claim(ctx, "s", "k", "fp")
	require.NoError(t, err)
	owner := e.takeOver(t, "k")

	staleResp := idempotency.Response{Status: 201, Body: []byte("stale")}
	ownerResp := idempotency.Response{Status: 201, Body: []byte("owner")}
	assertKeyError(t, e.store.Complete(ctx, stale, staleResp), idempotency.ErrLockLost, "s", "k")
	assertKeyError(t, e.store.Release(ctx, stale), idempotency.ErrLockLost, "s", "k")
	_, err = e.store.Claim(ctx, "s", "k", "fp")
	assertKeyError(t, err, idempotency.ErrInProgress, "s", "k") // the stale release deleted nothing

	require.NoError(t, e.store.Complete(ctx, owner, ownerResp))
	assertKeyError(t, e.store.Complete(ctx, stale, staleResp), idempotency.ErrLockLost, "s", "k")
	assertKeyError(t, e.store.Complete(ctx, owner, staleResp), idempotency.ErrLockLost, "s", "k")
	assertKeyError(t, e.store.Release(ctx, owner), idempotency.ErrLockLost, "s", "k")
	e.requireReplayed(t, "k", ownerResp)

	// Fencing is by token: a late owner nobody took over from still completes.
	late, err := e.store.Claim(ctx, "s", "late", "fp")
	require.NoError(t, err)
	e.clock.Advance(suiteLockTimeout + time.Second)
	require.NoError(t, e.store.Complete(ctx, late, ownerResp))
	e.requireReplayed(t, "late", ownerResp)
}

// testFencingInsideDo: fn outlives its lock and another request takes the key over; Do
// then reports ErrLockLost and the new owner's response is the one kept.
func testFencingInsideDo(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	var owner idempotency.Claim
	_, _, err := e.store.Do(ctx, "s", "k", "fp", func(context.Context) (idempotency.Response, error) {
		owner = e.takeOver(t, "k")
		return idempotency.Response{Status: 201, Body: []byte("stale")}, nil
	})
	assertKeyError(t, err, idempotency.ErrLockLost, "s", "k")

	want := idempotency.Response{Status: 201, Body: []byte("owner")}
	require.NoError(t, e.store.Complete(ctx, owner, want))
	e.requireReplayed(t, "k", want)
}

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

	e.requireReplayed(t, "young", young, "a live record survives the purge")
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
