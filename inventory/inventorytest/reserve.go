package inventorytest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/inventory"
)

func testValidation(t *testing.T, h Harness) {
	inv, _, _ := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "a", 5000, 0)
	many := make([]inventory.Line, inventory.MaxLines+1)
	for i := range many {
		many[i] = inventory.Line{SKU: "a", Qty: 1}
	}
	cases := []struct {
		name string
		req  inventory.ReserveRequest
		kind error
	}{
		{"zero qty", inventory.ReserveRequest{ID: "v", Lines: lines("a", 0)}, inventory.ErrInvalidQuantity},
		{"negative qty", inventory.ReserveRequest{ID: "v", Lines: lines("a", 2, "a", -1)}, inventory.ErrInvalidQuantity},
		{"51 lines", inventory.ReserveRequest{ID: "v", Lines: many}, inventory.ErrTooManyLines},
		{"1000 of one SKU", inventory.ReserveRequest{ID: "v", Lines: lines("a", 1000)}, inventory.ErrQuantityTooLarge},
		{"1000 of one SKU summed", inventory.ReserveRequest{ID: "v", Lines: lines("a", 500, "a", 500)}, inventory.ErrQuantityTooLarge},
		{"no lines", inventory.ReserveRequest{ID: "v"}, inventory.ErrInvalidRequest},
		{"empty ID", inventory.ReserveRequest{Lines: lines("a", 1)}, inventory.ErrInvalidRequest},
		{"long ID", inventory.ReserveRequest{ID: strings.Repeat("v", 65), Lines: lines("a", 1)}, inventory.ErrInvalidRequest},
		{"ID with space", inventory.ReserveRequest{ID: "v 1", Lines: lines("a", 1)}, inventory.ErrInvalidRequest},
		{"bad SKU", inventory.ReserveRequest{ID: "v", Lines: lines("a,b", 1)}, inventory.ErrInvalidRequest},
		{"bad buyer", inventory.ReserveRequest{ID: "v", Lines: lines("a", 1), BuyerID: "ä"}, inventory.ErrInvalidRequest},
		{"negative TTL", inventory.ReserveRequest{ID: "v", Lines: lines("a", 1), TTL: -time.Second}, inventory.ErrInvalidRequest},
	}
	for _, tc := range cases {
		_, err := inv.Reserve(ctx, tc.req)
		requireAs[*inventory.ValidationError](t, err, inventory.ErrInvalidRequest)
		require.ErrorIs(t, err, tc.kind, tc.name)
	}
	wantStock(t, inv, "a", 5000, 0, 0)
	requireNotFound(t, inv, "v")

	// 50 lines and 999 of one SKU are allowed.
	reserve(t, inv, "v-50", "", many[:inventory.MaxLines]...)
	reserve(t, inv, "v-999", "", lines("a", 998, "a", 1)...)
	wantStock(t, inv, "a", 5000-50-999, 50+999, 0)

	for _, bad := range []string{"", "x y", strings.Repeat("i", 65)} {
		require.ErrorIs(t, inv.Commit(ctx, bad), inventory.ErrInvalidRequest)
		require.ErrorIs(t, inv.Release(ctx, bad), inventory.ErrInvalidRequest)
		_, err := inv.Get(ctx, bad)
		require.ErrorIs(t, err, inventory.ErrInvalidRequest)
	}
}

func testReserveAllOrNothing(t *testing.T, h Harness) {
	inv, _, _ := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "a", 5, 0)
	setStock(t, inv, "b", 1, 0)
	setStock(t, inv, "c", 1, 0)

	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "r1", Lines: lines("c", 2, "a", 2, "b", 2)})
	e := requireAs[*inventory.InsufficientStockError](t, err, inventory.ErrInsufficientStock)
	// The first short SKU in SKU order.
	assert.Equal(t, inventory.InsufficientStockError{SKU: "b", Requested: 2, Available: 1}, *e)
	wantStock(t, inv, "a", 5, 0, 0)
	wantStock(t, inv, "b", 1, 0, 0)
	wantStock(t, inv, "c", 1, 0, 0)
	requireNotFound(t, inv, "r1")

	// A refused reservation leaves no trace: its ID is free.
	r := reserve(t, inv, "r1", "", lines("a", 2, "b", 1, "c", 1)...)
	assert.Equal(t, lines("a", 2, "b", 1, "c", 1), r.Lines)
	wantStock(t, inv, "a", 3, 2, 0)
	wantStock(t, inv, "b", 0, 1, 0)
	wantStock(t, inv, "c", 0, 1, 0)
}

func testReserveSumsLines(t *testing.T, h Harness) {
	inv, clk, _ := newInv(t, h, inventory.WithDefaultTTL(10*time.Minute))
	ctx := context.Background()
	setStock(t, inv, "a", 10, 0)
	setStock(t, inv, "b", 10, 0)
	now := clk.Now()

	r, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "r1", Lines: lines("b", 1, "a", 2, "b", 3), BuyerID: "buyer-1"})
	require.NoError(t, err)
	want := inventory.Reservation{
		ID: "r1", Lines: lines("a", 2, "b", 4), BuyerID: "buyer-1", State: inventory.StateReserved,
		CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute),
	}
	assert.Equal(t, want, r)
	got, err := inv.Get(ctx, "r1")
	require.NoError(t, err)
	assert.Equal(t, want, got)
	wantStock(t, inv, "a", 8, 2, 0)
	wantStock(t, inv, "b", 6, 4, 0)
}

func testUnknownSKU(t *testing.T, h Harness) {
	inv, _, _ := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "a", 5, 0)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "r1", Lines: lines("a", 1, "zz", 1)})
	assert.Equal(t, "zz", requireAs[*inventory.UnknownSKUError](t, err, inventory.ErrUnknownSKU).SKU)
	wantStock(t, inv, "a", 5, 0, 0)
	requireNotFound(t, inv, "r1")
}

func testIdempotency(t *testing.T, h Harness) {
	inv, clk, _ := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "a", 10, 0)
	setStock(t, inv, "b", 10, 0)
	req := inventory.ReserveRequest{ID: "r1", Lines: lines("a", 2, "b", 1), TTL: time.Minute, BuyerID: "buyer-1"}
	first, err := inv.Reserve(ctx, req)
	require.NoError(t, err)

	// The same request later, with lines reordered or split, or another TTL: the original.
	clk.Advance(10 * time.Second)
	for _, again := range []inventory.ReserveRequest{
		req,
		{ID: "r1", Lines: lines("b", 1, "a", 1, "a", 1), TTL: time.Minute, BuyerID: "buyer-1"},
		{ID: "r1", Lines: lines("a", 2, "b", 1), TTL: time.Hour, BuyerID: "buyer-1"},
	} {
		r, err := inv.Reserve(ctx, again)
		require.NoError(t, err)
		assert.Equal(t, first, r)
	}
	wantStock(t, inv, "a", 8, 2, 0)
	wantStock(t, inv, "b", 9, 1, 0)

	// The same ID with other lines or another buyer is a conflict and changes nothing.
	for _, other := range []inventory.ReserveRequest{
		{ID: "r1", Lines: lines("a", 3, "b", 1), BuyerID: "buyer-1"},
		{ID: "r1", Lines: lines("a", 2), BuyerID: "buyer-1"},
		{ID: "r1", Lines: lines("a", 2, "b", 1), BuyerID: "buyer-2"},
		{ID: "r1", Lines: lines("a", 2, "b", 1)},
	} {
		_, err := inv.Reserve(ctx, other)
		e := requireAs[*inventory.ConflictError](t, err, inventory.ErrIdempotencyConflict)
		assert.Equal(t, inventory.ConflictError{Kind: "reservation", Key: "r1", Err: inventory.ErrIdempotencyConflict}, *e)
	}
	wantStock(t, inv, "a", 8, 2, 0)

	// After it resolved, a replay returns it as it is now and never reserves again.
	require.NoError(t, inv.Commit(ctx, "r1"))
	r, err := inv.Reserve(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, inventory.StateCommitted, r.State)
	assert.Equal(t, clk.Now(), r.ResolvedAt)
	assert.Equal(t, first.ExpiresAt, r.ExpiresAt)
	wantStock(t, inv, "a", 8, 0, 2)
	wantStock(t, inv, "b", 9, 0, 1)
}

// testConcurrentReplays sends one request many times at once: it is reserved once.
func testConcurrentReplays(t *testing.T, h Harness) {
	inv, _, _ := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "a", 100, 0)
	setStock(t, inv, "b", 100, 0)
	req := inventory.ReserveRequest{ID: "same", Lines: lines("a", 3, "b", 2), TTL: time.Minute, BuyerID: "buyer-1"}
	const n = 30
	results := make([]inventory.Reservation, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// ErrContention means "try again" (a backend may give up on a deadlock it kept
			// meeting); a client retries it, and the request is still reserved once.
			for range 20 {
				if results[i], errs[i] = inv.Reserve(ctx, req); !errors.Is(errs[i], inventory.ErrContention) {
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		assert.Equal(t, results[0], results[i])
	}
	wantStock(t, inv, "a", 97, 3, 0)
	wantStock(t, inv, "b", 98, 2, 0)
}
