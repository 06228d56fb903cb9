package inventorytest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/inventory"
)

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
