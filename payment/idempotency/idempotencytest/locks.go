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
	e.clock.Advance(suiteLockTimeout)
	second, err := e.store.Claim(ctx, "s", "k2", "fp")
	require.NoError(t, err)
	assert.True(t, second.TookOver)
	assert.False(t, first.TookOver)
	assert.NotEqual(t, first.Token, second.Token)
	assert.Equal(t, e.clock.Now().Add(suiteLockTimeout), second.LockedUntil)
	_, err = e.store.Claim(ctx, "s", "k2", "fp")
	assertKeyError(t, err, idempotency.ErrInProgress, "s", "k2")
}

// testFencing: a stale owner coming back after its lock was taken over can neither store
// its response nor release the new owner's claim; a lock that expired without a takeover
// still completes; a claim completes at most once.
func testFencing(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	stale, err := e.store.Claim(ctx, "s", "k", "fp")
	require.NoError(t, err)
	e.clock.Advance(suiteLockTimeout)
	owner, err := e.store.Claim(ctx, "s", "k", "fp")
	require.NoError(t, err)
	require.True(t, owner.TookOver)

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
	got, replayed, err := e.store.Do(ctx, "s", "k", "fp", mustNotRun(t))
	require.NoError(t, err)
	assert.True(t, replayed)
	sameResponse(t, ownerResp, got)

	// Fencing is by token: a late owner nobody took over from still completes.
	late, err := e.store.Claim(ctx, "s", "late", "fp")
	require.NoError(t, err)
	e.clock.Advance(suiteLockTimeout + time.Second)
	require.NoError(t, e.store.Complete(ctx, late, ownerResp))
	got, replayed, err = e.store.Do(ctx, "s", "late", "fp", mustNotRun(t))
	require.NoError(t, err)
	assert.True(t, replayed)
	sameResponse(t, ownerResp, got)
}

// testFencingInsideDo: fn outlives its lock and another request takes the key over; Do
// then reports ErrLockLost and the new owner's response is the one kept.
func testFencingInsideDo(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	var owner idempotency.Claim
	_, _, err := e.store.Do(ctx, "s", "k", "fp", func(context.Context) (idempotency.Response, error) {
		e.clock.Advance(suiteLockTimeout)
		var err error
		owner, err = e.store.Claim(ctx, "s", "k", "fp")
		require.NoError(t, err)
		require.True(t, owner.TookOver)
		return idempotency.Response{Status: 201, Body: []byte("stale")}, nil
	})
	assertKeyError(t, err, idempotency.ErrLockLost, "s", "k")

	want := idempotency.Response{Status: 201, Body: []byte("owner")}
	require.NoError(t, e.store.Complete(ctx, owner, want))
	got, replayed, err := e.store.Do(ctx, "s", "k", "fp", mustNotRun(t))
	require.NoError(t, err)
	assert.True(t, replayed)
	sameResponse(t, want, got)
}
