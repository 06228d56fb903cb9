// Package inventorytest is the conformance suite every inventory.Backend passes: run it
// from the backend's tests with Run(t, Harness{...}) against a real server. It checks every
// behaviour of the inventory API, every typed error, idempotent replays, expiry through an
// injected clock, transaction joining where the backend claims it, and the invariants
// under concurrency (no oversell, on hand conserved, reserved equal to the sum of live
// reservations, buyer allowances exact), always by the exact end state.
//
// Benchmark runs the same workload shapes as benchmarks, for comparing backends.
package inventorytest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
)

// Harness describes a backend to the suite.
type Harness struct {
	// New returns an Inventory over fresh, empty storage of its own, built with opts. For a
	// backend that joins SQL transactions it also returns the *bun.DB the storage lives in;
	// otherwise nil.
	New func(tb testing.TB, opts ...inventory.Option) (*inventory.Inventory, *bun.DB)
	// JoinsTx says the backend joins the caller's SQL transaction (Inventory.WithTx with a
	// bun.Tx): true for SQL backends, false for Redis.
	JoinsTx bool
}

// Run runs the conformance suite against h. Subtests run in parallel, each on its own storage.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Stock", testStock},
		{"Adjust", testAdjust},
		{"AdjustMaxOnHand", testAdjustMaxOnHand},
		{"Validation", testValidation},
		{"ReserveAllOrNothing", testReserveAllOrNothing},
		{"ReserveSumsLines", testReserveSumsLines},
		{"UnknownSKU", testUnknownSKU},
		{"Idempotency", testIdempotency},
		{"ConcurrentReplays", testConcurrentReplays},
		{"CommitRelease", testCommitRelease},
		{"Expiry", testExpiry},
		{"SweepBatches", testSweepBatches},
		{"RunLoop", testRunLoop},
		{"BuyerLimit", testBuyerLimit},
		{"RaceForLastUnits", testRaceForLastUnits},
		{"RaceBuyerLimit", testRaceBuyerLimit},
		{"Storm", testStorm},
		{"Transactions", testTransactions},
		{"Context", testContext},
		{"Return", testReturn},
		{"ReplayDead", testReplayDead},
		{"ConcurrentSweepers", testConcurrentSweepers},
		{"SetStockAgain", testSetStockAgain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}

// newInv returns an inventory on a manual clock.
func newInv(t *testing.T, h Harness, opts ...inventory.Option) (*inventory.Inventory, *testclock.Clock, *bun.DB) {
	t.Helper()
	clk := testclock.New(time.Date(2025, 11, 1, 12, 0, 0, 0, time.UTC))
	inv, db := h.New(t, append([]inventory.Option{inventory.WithClock(clk.Now)}, opts...)...)
	return inv, clk, db
}

// lines builds lines from sku, qty pairs.
func lines(pairs ...any) []inventory.Line {
	out := make([]inventory.Line, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, inventory.Line{SKU: pairs[i].(string), Qty: int64(pairs[i+1].(int))})
	}
	return out
}

func setStock(t *testing.T, inv *inventory.Inventory, sku string, onHand, limit int64) {
	t.Helper()
	_, err := inv.SetStock(context.Background(), inventory.StockSetting{SKU: sku, OnHand: onHand, BuyerLimit: limit})
	require.NoError(t, err)
}

func stock(t *testing.T, inv *inventory.Inventory, sku string) inventory.Stock {
	t.Helper()
	return testkit.Must(inv.Stock(context.Background(), sku))(t)
}

// wantStock checks a SKU's counts exactly.
func wantStock(t *testing.T, inv *inventory.Inventory, sku string, available, reserved, sold int64) {
	t.Helper()
	st := stock(t, inv, sku)
	assert.Equal(t, [3]int64{available, reserved, sold}, [3]int64{st.Available, st.Reserved, st.Sold},
		"%s: available, reserved, sold", sku)
	assert.Equal(t, st.Available+st.Reserved, st.OnHand, "%s: on hand = available + reserved", sku)
}

func reserve(t *testing.T, inv *inventory.Inventory, id, buyer string, ls ...inventory.Line) inventory.Reservation {
	t.Helper()
	return testkit.Must(inv.Reserve(context.Background(), inventory.ReserveRequest{ID: id, Lines: ls, TTL: time.Minute, BuyerID: buyer}))(t)
}

// requireAs asserts err matches sentinel and is a *E, and returns it.
func requireAs[E error](t *testing.T, err error, sentinel error) E {
	t.Helper()
	require.ErrorIs(t, err, sentinel)
	var e E
	require.True(t, errors.As(err, &e), "%v is not a %T", err, e)
	return e
}

func requireNotFound(t *testing.T, inv *inventory.Inventory, id string) {
	t.Helper()
	_, err := inv.Get(context.Background(), id)
	require.ErrorIs(t, err, inventory.ErrReservationNotFound)
}

func id(prefix string, i int) string { return fmt.Sprintf("%s-%d", prefix, i) }
