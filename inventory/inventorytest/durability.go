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

// testTransactions: a backend that joins SQL transactions commits and rolls back with the
// caller, and a failed operation inside the caller's transaction undoes only its own
// writes. A backend that cannot join says so.
func testTransactions(t *testing.T, h Harness) {
	inv, _, db := newInv(t, h)
	require.Equal(t, h.JoinsTx, inv.JoinsTx())
	if !h.JoinsTx {
		assert.Same(t, inv, inv.WithTx(db), "WithTx of a backend that cannot join returns the inventory itself")
		return
	}
	require.NotNil(t, db, "a backend that joins transactions must give the suite its *bun.DB")
	ctx := context.Background()
	setStock(t, inv, "a", 10, 0)
	setStock(t, inv, "b", 1, 0)
	rollback := errors.New("rollback")

	// Everything rolls back with the caller.
	err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		in := inv.WithTx(tx)
		_, err := in.Reserve(ctx, inventory.ReserveRequest{ID: "t1", Lines: lines("a", 2), TTL: time.Minute})
		require.NoError(t, err)
		require.NoError(t, in.Commit(ctx, "t1"))
		_, err = in.Adjust(ctx, inventory.Adjustment{ID: "adj-1", SKU: "a", Delta: 5, Reason: "restock"})
		require.NoError(t, err)
		st, err := in.Stock(ctx, "a")
		require.NoError(t, err)
		assert.Equal(t, inventory.Stock{SKU: "a", OnHand: 13, Available: 13, Sold: 2}, st, "the transaction sees its own writes")
		return rollback
	})
	require.ErrorIs(t, err, rollback)
	requireNotFound(t, inv, "t1")
	wantStock(t, inv, "a", 10, 0, 0)

	// A failed reservation inside the caller's transaction leaves the transaction usable
	// and undoes only itself.
	err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		in := inv.WithTx(tx)
		_, err := in.Reserve(ctx, inventory.ReserveRequest{ID: "t2", Lines: lines("a", 1), TTL: time.Minute})
		require.NoError(t, err)
		_, err = in.Reserve(ctx, inventory.ReserveRequest{ID: "t3", Lines: lines("a", 3, "b", 2), TTL: time.Minute})
		require.ErrorIs(t, err, inventory.ErrInsufficientStock)
		_, err = in.Reserve(ctx, inventory.ReserveRequest{ID: "t4", Lines: lines("a", 1, "b", 1), TTL: time.Minute})
		require.NoError(t, err)
		return nil
	})
	require.NoError(t, err)
	requireNotFound(t, inv, "t3")
	for _, id := range []string{"t2", "t4"} {
		r, err := inv.Get(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, inventory.StateReserved, r.State)
	}
	wantStock(t, inv, "a", 8, 2, 0)
	wantStock(t, inv, "b", 0, 1, 0)

	// WithTx on the database itself runs in transactions of its own.
	require.NoError(t, inv.WithTx(db).Commit(ctx, "t2"))
	wantStock(t, inv, "a", 8, 1, 1)
}

// testContext: a cancelled context is returned as it is and changes nothing.
func testContext(t *testing.T, h Harness) {
	inv, _, _ := newInv(t, h)
	setStock(t, inv, "a", 10, 0)
	reserve(t, inv, "r1", "", lines("a", 1)...)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "r2", Lines: lines("a", 1)})
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, inv.Commit(ctx, "r1"), context.Canceled)
	require.ErrorIs(t, inv.Release(ctx, "r1"), context.Canceled)
	_, err = inv.Stocks(ctx, []string{"a"})
	require.ErrorIs(t, err, context.Canceled)
	_, err = inv.Sweep(ctx)
	require.ErrorIs(t, err, context.Canceled)

	requireNotFound(t, inv, "r2")
	wantStock(t, inv, "a", 9, 1, 0)
}
