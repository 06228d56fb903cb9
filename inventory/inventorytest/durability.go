package inventorytest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/inventory"
)

// testReturn: a committed reservation's units come back once, with the buyer's allowance;
// every other state refuses, and a returned reservation is final.
func testReturn(t *testing.T, h Harness) {
	inv, _, _ := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "a", 10, 2)
	reserve(t, inv, "r1", "u1", lines("a", 2)...)
	requireAs[*inventory.StateError](t, inv.Return(ctx, "r1"), inventory.ErrReservationNotCommitted)
	require.NoError(t, inv.Commit(ctx, "r1"))
	wantStock(t, inv, "a", 8, 0, 2)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "r2", Lines: lines("a", 1), BuyerID: "u1"})
	requireAs[*inventory.BuyerLimitError](t, err, inventory.ErrBuyerLimitExceeded)

	require.NoError(t, inv.Return(ctx, "r1"))
	wantStock(t, inv, "a", 10, 0, 0)
	require.NoError(t, inv.Return(ctx, "r1"), "a replay succeeds")
	wantStock(t, inv, "a", 10, 0, 0)
	r, err := inv.Get(ctx, "r1")
	require.NoError(t, err)
	assert.Equal(t, inventory.StateReturned, r.State)
	requireAs[*inventory.StateError](t, inv.Commit(ctx, "r1"), inventory.ErrReservationReturned)
	requireAs[*inventory.StateError](t, inv.Release(ctx, "r1"), inventory.ErrReservationReturned)
	reserve(t, inv, "r3", "u1", lines("a", 2)...) // the allowance came back

	reserve(t, inv, "r4", "u2", lines("a", 1)...)
	require.NoError(t, inv.Release(ctx, "r4"))
	requireAs[*inventory.StateError](t, inv.Return(ctx, "r4"), inventory.ErrReservationReleased)
	require.ErrorIs(t, inv.Return(ctx, "nope"), inventory.ErrReservationNotFound)
	wantStock(t, inv, "a", 8, 2, 0)
}

// testReplayDead: a Reserve replaying the ID of a released, expired or returned
// reservation fails with *StateError and takes nothing — a retry after a failure never
// reports a reservation that holds no stock.
func testReplayDead(t *testing.T, h Harness) {
	inv, clk, db := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "a", 3, 0)
	req := func(id string) inventory.ReserveRequest {
		return inventory.ReserveRequest{ID: id, Lines: lines("a", 1), TTL: time.Minute}
	}
	reserve(t, inv, "released", "", lines("a", 1)...)
	require.NoError(t, inv.Release(ctx, "released"))
	reserve(t, inv, "returned", "", lines("a", 1)...)
	require.NoError(t, inv.Commit(ctx, "returned"))
	require.NoError(t, inv.Return(ctx, "returned"))
	reserve(t, inv, "expired", "", lines("a", 1)...)
	clk.Advance(2 * time.Minute)
	n, err := inv.Sweep(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	wantStock(t, inv, "a", 3, 0, 0)

	for id, sentinel := range map[string]error{
		"released": inventory.ErrReservationReleased, "expired": inventory.ErrReservationExpired,
		"returned": inventory.ErrReservationReturned,
	} {
		_, err := inv.Reserve(ctx, req(id))
		e := requireAs[*inventory.StateError](t, err, sentinel)
		assert.Equal(t, id, e.ID)
	}
	wantStock(t, inv, "a", 3, 0, 0)

	// The SQL half of a checkout failing after the reservation: with a backend that joins
	// the transaction the reservation rolls back with it and a retry reserves anew; with
	// one that cannot, the retry finds the live reservation (nobody released it).
	rollback := errors.New("the order insert failed")
	if h.JoinsTx {
		err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			_, err := inv.WithTx(tx).Reserve(ctx, inventory.ReserveRequest{ID: "retry", Lines: lines("a", 2), TTL: time.Minute})
			require.NoError(t, err)
			return rollback
		})
		require.ErrorIs(t, err, rollback)
	} else {
		reserve(t, inv, "retry", "", lines("a", 2)...)
	}
	r := reserve(t, inv, "retry", "", lines("a", 2)...)
	assert.Equal(t, inventory.StateReserved, r.State)
	wantStock(t, inv, "a", 1, 2, 0)
	require.NoError(t, inv.Commit(ctx, "retry"))
	wantStock(t, inv, "a", 1, 0, 2)
}

// testConcurrentSweepers: four sweepers over 150 due reservations report 150 in total:
// each reservation is expired, and counted, exactly once.
func testConcurrentSweepers(t *testing.T, h Harness) {
	inv, clk, _ := newInv(t, h, inventory.WithSweepBatch(7))
	ctx := context.Background()
	const due = 150
	setStock(t, inv, "a", due, 0)
	for i := range due {
		reserve(t, inv, id("d", i), id("u", i%10), lines("a", 1)...)
	}
	clk.Advance(time.Hour)
	counts := make([]int, 4)
	var wg sync.WaitGroup
	for s := range counts {
		wg.Go(func() {
			for {
				n, err := inv.Sweep(ctx)
				if !assert.NoError(t, err) || n == 0 {
					return
				}
				counts[s] += n
			}
		})
	}
	wg.Wait()
	total := 0
	for _, c := range counts {
		total += c
	}
	assert.Equal(t, due, total, "expired per sweeper: %v", counts)
	wantStock(t, inv, "a", due, 0, 0)
}

// testSetStockAgain: setting the same stock twice, or stock again after sales, is exact.
func testSetStockAgain(t *testing.T, h Harness) {
	inv, _, _ := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "a", 10, 0)
	setStock(t, inv, "a", 10, 0)
	reserve(t, inv, "r1", "", lines("a", 3)...)
	require.NoError(t, inv.Commit(ctx, "r1"))
	reserve(t, inv, "r2", "", lines("a", 2)...)
	setStock(t, inv, "a", 20, 1)
	setStock(t, inv, "a", 20, 1)
	st := stock(t, inv, "a")
	assert.Equal(t, inventory.Stock{SKU: "a", OnHand: 20, Available: 18, Reserved: 2, Sold: 3, BuyerLimit: 1}, st)
}
