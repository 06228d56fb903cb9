package inventorytest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/inventory"
)

func testCommitRelease(t *testing.T, h Harness) {
	inv, clk, _ := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "a", 10, 0)
	created := clk.Now()
	reserve(t, inv, "c1", "buyer-1", lines("a", 3)...)
	reserve(t, inv, "r1", "", lines("a", 2)...)
	wantStock(t, inv, "a", 5, 5, 0)

	clk.Advance(time.Second)
	require.NoError(t, inv.Commit(ctx, "c1"))
	wantStock(t, inv, "a", 5, 2, 3)
	got, err := inv.Get(ctx, "c1")
	require.NoError(t, err)
	assert.Equal(t, inventory.Reservation{
		ID: "c1", Lines: lines("a", 3), BuyerID: "buyer-1", State: inventory.StateCommitted,
		CreatedAt: created, ExpiresAt: created.Add(time.Minute), ResolvedAt: created.Add(time.Second),
	}, got)

	// Commit again: nothing moves. Release after Commit: a typed error, nothing moves.
	clk.Advance(time.Second)
	require.NoError(t, inv.Commit(ctx, "c1"))
	err = inv.Release(ctx, "c1")
	e := requireAs[*inventory.StateError](t, err, inventory.ErrReservationCommitted)
	assert.Equal(t, inventory.StateError{ID: "c1", State: inventory.StateCommitted}, *e)
	wantStock(t, inv, "a", 5, 2, 3)

	require.NoError(t, inv.Release(ctx, "r1"))
	wantStock(t, inv, "a", 7, 0, 3)
	require.NoError(t, inv.Release(ctx, "r1"))
	err = inv.Commit(ctx, "r1")
	e = requireAs[*inventory.StateError](t, err, inventory.ErrReservationReleased)
	assert.Equal(t, inventory.StateReleased, e.State)
	wantStock(t, inv, "a", 7, 0, 3)
	got, err = inv.Get(ctx, "r1")
	require.NoError(t, err)
	assert.Equal(t, inventory.StateReleased, got.State)
	assert.Equal(t, created.Add(2*time.Second), got.ResolvedAt)

	require.ErrorIs(t, inv.Commit(ctx, "nope"), inventory.ErrReservationNotFound)
	require.ErrorIs(t, inv.Release(ctx, "nope"), inventory.ErrReservationNotFound)
	requireNotFound(t, inv, "nope")
	wantStock(t, inv, "a", 7, 0, 3)
}

func testExpiry(t *testing.T, h Harness) {
	inv, clk, _ := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "a", 10, 2)
	start := clk.Now()
	req := func(id string, ttl time.Duration) inventory.ReserveRequest {
		return inventory.ReserveRequest{ID: id, Lines: lines("a", 1), TTL: ttl, BuyerID: "buyer-1"}
	}
	for _, r := range []inventory.ReserveRequest{req("e1", time.Minute), req("e2", time.Minute)} {
		_, err := inv.Reserve(ctx, r)
		require.NoError(t, err)
	}
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "e3", Lines: lines("a", 1), TTL: 5 * time.Minute})
	requireAs[*inventory.BuyerLimitError](t, err, inventory.ErrBuyerLimitExceeded) // limited SKU, no buyer
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "e3", Lines: lines("a", 1), TTL: 5 * time.Minute, BuyerID: "buyer-2"})
	require.NoError(t, err)
	wantStock(t, inv, "a", 7, 3, 0)

	// One millisecond before the deadline nothing is due.
	clk.Advance(time.Minute - time.Millisecond)
	n, err := inv.Sweep(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)

	// At the deadline Commit and Release fail as expired, giving the units back.
	clk.Advance(time.Millisecond)
	err = inv.Commit(ctx, "e1")
	e := requireAs[*inventory.StateError](t, err, inventory.ErrReservationExpired)
	assert.Equal(t, inventory.StateError{ID: "e1", State: inventory.StateExpired}, *e)
	requireAs[*inventory.StateError](t, inv.Release(ctx, "e2"), inventory.ErrReservationExpired)
	wantStock(t, inv, "a", 9, 1, 0)
	got, err := inv.Get(ctx, "e1")
	require.NoError(t, err)
	assert.Equal(t, inventory.StateExpired, got.State)
	assert.Equal(t, start.Add(time.Minute), got.ExpiresAt)
	assert.Equal(t, start.Add(time.Minute), got.ResolvedAt)
	n, err = inv.Sweep(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "e1 and e2 were expired already")

	// A replay of an expired reservation fails and reserves nothing.
	_, err = inv.Reserve(ctx, req("e1", time.Minute))
	requireAs[*inventory.StateError](t, err, inventory.ErrReservationExpired)
	wantStock(t, inv, "a", 9, 1, 0)

	// The sweeper expires e3 once it is due; afterwards every verb says expired.
	clk.Advance(4 * time.Minute)
	n, err = inv.Sweep(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	wantStock(t, inv, "a", 10, 0, 0)
	requireAs[*inventory.StateError](t, inv.Commit(ctx, "e3"), inventory.ErrReservationExpired)
	requireAs[*inventory.StateError](t, inv.Release(ctx, "e3"), inventory.ErrReservationExpired)
	got, err = inv.Get(ctx, "e3")
	require.NoError(t, err)
	assert.Equal(t, inventory.StateExpired, got.State)
	assert.Equal(t, clk.Now(), got.ResolvedAt)
	n, err = inv.Sweep(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	wantStock(t, inv, "a", 10, 0, 0)

	// Expiry gave the buyer allowances back.
	reserve(t, inv, "e4", "buyer-1", lines("a", 2)...)
	reserve(t, inv, "e5", "buyer-2", lines("a", 2)...)
	wantStock(t, inv, "a", 6, 4, 0)
}

// testSweepBatches: one Sweep expires everything due, across several batches.
func testSweepBatches(t *testing.T, h Harness) {
	inv, clk, _ := newInv(t, h, inventory.WithSweepBatch(20))
	ctx := context.Background()
	setStock(t, inv, "a", 100, 0)
	setStock(t, inv, "b", 100, 0)
	for i := range 55 {
		reserve(t, inv, id("s", i), "buyer-1", lines("a", 1, "b", 1)...)
	}
	reserve(t, inv, "late", "", lines("a", 1)...)
	clk.Advance(30 * time.Second)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "later", Lines: lines("b", 1), TTL: time.Hour})
	require.NoError(t, err)
	clk.Advance(30 * time.Second)
	n, err := inv.Sweep(ctx)
	require.NoError(t, err)
	assert.Equal(t, 56, n)
	wantStock(t, inv, "a", 100, 0, 0)
	wantStock(t, inv, "b", 99, 1, 0)
	got, err := inv.Get(ctx, "later")
	require.NoError(t, err)
	assert.Equal(t, inventory.StateReserved, got.State)
}

// testRunLoop runs the background sweeper and stops it.
func testRunLoop(t *testing.T, h Harness) {
	inv, clk, _ := newInv(t, h, inventory.WithSweepInterval(5*time.Millisecond))
	ctx := context.Background()
	setStock(t, inv, "a", 5, 0)
	reserve(t, inv, "r1", "", lines("a", 2)...)

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- inv.Run(runCtx) }()

	clk.Advance(time.Minute)
	// A backend may record the expiry before its counts follow (a journaled Redis frees the
	// units in Redis after the SQL commit), so wait for both.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got, err := inv.Get(ctx, "r1")
		require.NoError(c, err)
		assert.Equal(c, inventory.StateExpired, got.State)
		st, err := inv.Stock(ctx, "a")
		require.NoError(c, err)
		assert.Equal(c, [3]int64{5, 0, 0}, [3]int64{st.Available, st.Reserved, st.Sold})
	}, 30*time.Second, 10*time.Millisecond)
	wantStock(t, inv, "a", 5, 0, 0)

	stop()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

func testBuyerLimit(t *testing.T, h Harness) {
	inv, _, _ := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "drop", 100, 2)
	setStock(t, inv, "sock", 100, 0)
	setStock(t, inv, "cap", 100, 1)

	reserve(t, inv, "r1", "u1", lines("drop", 1)...)
	reserve(t, inv, "r2", "u1", lines("drop", 1, "sock", 5)...)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "r3", Lines: lines("drop", 1, "sock", 1), BuyerID: "u1"})
	e := requireAs[*inventory.BuyerLimitError](t, err, inventory.ErrBuyerLimitExceeded)
	assert.Equal(t, inventory.BuyerLimitError{SKU: "drop", BuyerID: "u1", Limit: 2, Used: 2, Requested: 1}, *e)
	wantStock(t, inv, "sock", 95, 5, 0) // all or nothing

	// Per buyer and per SKU.
	reserve(t, inv, "r4", "u2", lines("drop", 2)...)
	reserve(t, inv, "r5", "u1", lines("cap", 1)...)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "r6", Lines: lines("drop", 3), BuyerID: "u3"})
	e = requireAs[*inventory.BuyerLimitError](t, err, inventory.ErrBuyerLimitExceeded)
	assert.Equal(t, inventory.BuyerLimitError{SKU: "drop", BuyerID: "u3", Limit: 2, Used: 0, Requested: 3}, *e)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "r7", Lines: lines("drop", 1)})
	e = requireAs[*inventory.BuyerLimitError](t, err, inventory.ErrBuyerLimitExceeded)
	assert.Equal(t, inventory.BuyerLimitError{SKU: "drop", Limit: 2, Requested: 1}, *e)
	reserve(t, inv, "r8", "", lines("sock", 1)...) // no limit, no buyer needed

	// Releasing gives the allowance back; committing keeps it used.
	require.NoError(t, inv.Release(ctx, "r1"))
	reserve(t, inv, "r9", "u1", lines("drop", 1)...)
	require.NoError(t, inv.Commit(ctx, "r2"))
	require.NoError(t, inv.Commit(ctx, "r9"))
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "r10", Lines: lines("drop", 1), BuyerID: "u1"})
	e = requireAs[*inventory.BuyerLimitError](t, err, inventory.ErrBuyerLimitExceeded)
	assert.Equal(t, int64(2), e.Used)
	wantStock(t, inv, "drop", 96, 2, 2)

	// A limit set later counts what the buyer already holds and bought.
	setStock(t, inv, "sock", 100, 6)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "r11", Lines: lines("sock", 2), BuyerID: "u1"})
	e = requireAs[*inventory.BuyerLimitError](t, err, inventory.ErrBuyerLimitExceeded)
	assert.Equal(t, inventory.BuyerLimitError{SKU: "sock", BuyerID: "u1", Limit: 6, Used: 5, Requested: 2}, *e)
	reserve(t, inv, "r12", "u1", lines("sock", 1)...)
}
