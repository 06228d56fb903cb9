package idempotencytest

import (
	"context"
	"io"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/payment/idempotency"
)

// lostReplies wraps the backend under test: the operations it is told to lose run for
// real, then their reply is replaced by a dependency failure — what a client sees when a
// connection breaks or times out after the server did the work.
type lostReplies struct {
	idempotency.Backend
	claims, completes atomic.Int64 // how many replies still to lose
}

func lost(error) error { return errcode.Unavailable("test backend", io.ErrUnexpectedEOF) }

// lossyStore returns a store on e's backend that loses the replies of its first claims
// claims and first completes completions.
func lossyStore(t *testing.T, e *env, claims, completes int64) *idempotency.Store {
	t.Helper()
	b := &lostReplies{Backend: e.backend}
	b.claims.Store(claims)
	b.completes.Store(completes)
	store, err := idempotency.New(b, idempotency.WithClock(e.clock.Now), idempotency.WithLockTimeout(suiteLockTimeout),
		idempotency.WithRetention(suiteRetention))
	require.NoError(t, err)
	return store
}

func (b *lostReplies) Claim(ctx context.Context, q idempotency.ClaimRequest) (idempotency.ClaimOutcome, *idempotency.Record, error) {
	o, r, err := b.Backend.Claim(ctx, q)
	if err == nil && b.claims.Add(-1) >= 0 {
		return 0, nil, lost(err)
	}
	return o, r, err
}

func (b *lostReplies) Complete(ctx context.Context, q idempotency.CompleteRequest) error {
	err := b.Backend.Complete(ctx, q)
	if err == nil && b.completes.Add(-1) >= 0 {
		return lost(err)
	}
	return err
}

// testCompleteIsIdempotent: completing a claim again with the same response succeeds and
// changes nothing (a retried completion whose first reply was lost); with another
// response it is refused; a claim retried with its own token is still held by it.
func testCompleteIsIdempotent(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	now := e.clock.Now()
	q := idempotency.ClaimRequest{Ref: idempotency.Ref{Scope: "s", Key: "k"}, Fingerprint: "fp", Token: "tok-1",
		Now: now, LockedUntil: now.Add(suiteLockTimeout), ExpiresAt: now.Add(suiteRetention)}
	for range 2 { // the second run is a retried claim: still ours
		outcome, rec, err := e.backend.Claim(ctx, q)
		require.NoError(t, err)
		assert.Equal(t, idempotency.ClaimCreated, outcome)
		assert.Nil(t, rec)
	}
	resp := idempotency.Response{Status: 409, ErrorCode: "invalid_order_state", Body: []byte(`{"code":"invalid_order_state"}`)}
	done := idempotency.CompleteRequest{Ref: q.Ref, Token: q.Token, Response: resp, Now: now, ExpiresAt: now.Add(suiteRetention)}
	require.NoError(t, e.backend.Complete(ctx, done))
	require.NoError(t, e.backend.Complete(ctx, done), "completing again with the same response")
	other := done
	other.Response.Body = []byte(`{"other":true}`)
	require.ErrorIs(t, e.backend.Complete(ctx, other), idempotency.ErrLockLost)
	stranger := done
	stranger.Token = "tok-2"
	require.ErrorIs(t, e.backend.Complete(ctx, stranger), idempotency.ErrLockLost)

	c, err := e.store.Claim(ctx, "s", "k", "fp")
	require.NoError(t, err)
	require.True(t, c.Replayed)
	sameResponse(t, resp, c.Response)
}

// testLostCompletionReply: when the reply to storing the response is lost, Do still
// answers the response it produced (the work is done), stores it in the background, and
// every retry gets it replayed; fn ran once.
func testLostCompletionReply(t *testing.T, h Harness) {
	e := newEnv(t, h)
	store := lossyStore(t, e, 0, 1)
	ctx := t.Context()
	var runs atomic.Int64
	resp, replayed, err := store.Do(ctx, "s", "k", "fp", charge(&runs))
	require.NoError(t, err, "work that was done is not reported as failed")
	assert.False(t, replayed)
	store.Close(ctx) // waits for the background completion

	again, replayed, err := store.Do(ctx, "s", "k", "fp", charge(&runs))
	require.NoError(t, err)
	assert.True(t, replayed)
	sameResponse(t, resp, again)
	assert.EqualValues(t, 1, runs.Load())
}

// testLostClaimReply: when the reply to a claim is lost, Do fails with
// errcode.ErrUnavailable and abandons the claim in the background, so a retry runs at
// once instead of answering ErrInProgress until the lock timeout.
func testLostClaimReply(t *testing.T, h Harness) {
	e := newEnv(t, h)
	store := lossyStore(t, e, 1, 0)
	ctx := t.Context()
	var runs atomic.Int64
	_, _, err := store.Do(ctx, "s", "k", "fp", charge(&runs))
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	assert.Zero(t, runs.Load())
	store.Close(ctx) // waits for the abandon

	_, replayed, err := store.Do(ctx, "s", "k", "fp", charge(&runs))
	require.NoError(t, err, "the abandoned claim does not hold the key")
	assert.False(t, replayed)
	assert.EqualValues(t, 1, runs.Load())
}
