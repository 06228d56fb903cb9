// Package holdtest is the conformance suite of hold.Holder: every holder (checkout's
// adapters over inventory, the ledger and coupons, or a holder of your own) runs Run against
// real stores, and a holder is done when it passes.
package holdtest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/hold"
)

// Harness is what Run needs of a holder.
type Harness[R any] struct {
	// Holder is the holder under test.
	Holder hold.Holder[R]
	// Request returns what a new hold asks for; every call one that can be held besides all
	// the earlier ones (a fresh coupon, points or units enough).
	Request func(t *testing.T) R
	// Advance moves the clock of the holder's store forward by d.
	Advance func(d time.Duration)
}

// Run runs the suite: post and void each resolve a hold at most once, each idempotent on
// its ID, the one refusing the other with ErrPosted or ErrVoided; an unknown ID is
// ErrGone; a hold past its deadline cannot be posted (ErrVoided, which is also ErrGone).
func Run[R any](t *testing.T, h Harness[R]) {
	var seq atomic.Int64
	newID := func() string { return fmt.Sprintf("holdtest-%d", seq.Add(1)) }
	ctx := context.Background()
	const ttl = time.Hour
	held := func(t *testing.T) string {
		t.Helper()
		id := newID()
		info, err := h.Holder.Hold(ctx, id, h.Request(t), ttl)
		require.NoError(t, err)
		assert.Equal(t, hold.Held, info.State)
		assert.Positive(t, info.Amount)
		got, err := h.Holder.Lookup(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, hold.Held, got.State)
		assert.Equal(t, info.Amount, got.Amount)
		return id
	}

	t.Run("PostOnce", func(t *testing.T) {
		id := held(t)
		require.NoError(t, h.Holder.Post(ctx, id))
		require.NoError(t, h.Holder.Post(ctx, id), "posting again changes nothing")
		err := h.Holder.Void(ctx, id)
		assert.ErrorIs(t, err, hold.ErrPosted)
		assert.NotErrorIs(t, err, hold.ErrGone)
		info, err := h.Holder.Lookup(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, hold.Posted, info.State)
	})
	t.Run("VoidOnce", func(t *testing.T) {
		id := held(t)
		require.NoError(t, h.Holder.Void(ctx, id))
		if err := h.Holder.Void(ctx, id); err != nil {
			assert.ErrorIs(t, err, hold.ErrVoided, "voiding again changes nothing")
		}
		err := h.Holder.Post(ctx, id)
		assert.ErrorIs(t, err, hold.ErrVoided)
		assert.ErrorIs(t, err, hold.ErrGone)
		info, err := h.Holder.Lookup(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, hold.Voided, info.State)
	})
	t.Run("Unknown", func(t *testing.T) {
		id := newID()
		assert.ErrorIs(t, h.Holder.Post(ctx, id), hold.ErrGone)
		_, err := h.Holder.Lookup(ctx, id)
		assert.ErrorIs(t, err, hold.ErrGone)
		if err := h.Holder.Void(ctx, id); err != nil {
			assert.ErrorIs(t, err, hold.ErrGone)
		}
	})
	t.Run("Deadline", func(t *testing.T) {
		id := held(t)
		h.Advance(ttl + time.Second)
		err := h.Holder.Post(ctx, id)
		assert.ErrorIs(t, err, hold.ErrVoided, "a hold past its deadline voids itself")
		assert.ErrorIs(t, err, hold.ErrGone)
		if err := h.Holder.Void(ctx, id); err != nil {
			assert.ErrorIs(t, err, hold.ErrVoided)
		}
	})
}
