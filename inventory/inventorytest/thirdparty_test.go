package inventorytest_test

// This file shows how the author of a backend outside this module proves it: implement
// inventory.Backend, then run the suite from the backend's own tests. memBackend is a
// complete backend keeping everything in maps under one mutex; it passes the suite the
// SQL and Redis backends pass.

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/inventorytest"
)

// TestThirdPartyBackend runs the conformance suite against memBackend. It does not join
// SQL transactions, so the Harness says JoinsTx false and returns no database.
func TestThirdPartyBackend(t *testing.T) {
	inventorytest.Run(t, inventorytest.Harness{
		New: func(tb testing.TB, opts ...inventory.Option) (*inventory.Inventory, *bun.DB) {
			return testkit.Must(inventory.New(newMemBackend(), opts...))(tb), nil
		},
	})
}

// memBackend is an inventory.Backend in memory: one process, nothing durable.
type memBackend struct {
	mu           sync.Mutex
	stock        map[string]*inventory.Stock // OnHand is left zero: see stockOf
	reservations map[string]inventory.Reservation
	adjustments  map[string]inventory.Adjustment
	usage        map[[2]string]int64 // units of a SKU a buyer holds or bought, by {sku, buyer}
}

func newMemBackend() *memBackend {
	return &memBackend{
		stock:        make(map[string]*inventory.Stock),
		reservations: make(map[string]inventory.Reservation),
		adjustments:  make(map[string]inventory.Adjustment),
		usage:        make(map[[2]string]int64),
	}
}

// lock takes the mutex unless ctx is done: like a real backend, a cancelled call changes
// nothing.
func (b *memBackend) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	return nil
}

func (b *memBackend) Reserve(ctx context.Context, r inventory.Reservation) (inventory.Reservation, error) {
	if err := b.lock(ctx); err != nil {
		return inventory.Reservation{}, err
	}
	defer b.mu.Unlock()
	if prev, ok := b.reservations[r.ID]; ok {
		if inventory.EncodeLines(prev.Lines) != inventory.EncodeLines(r.Lines) || prev.BuyerID != r.BuyerID {
			return inventory.Reservation{}, inventory.NewConflictError("reservation", r.ID)
		}
		return clone(prev), nil
	}
	for _, l := range r.Lines { // all lines or none: check every line before taking any
		if err := b.check(l, r.BuyerID); err != nil {
			return inventory.Reservation{}, err
		}
	}
	for _, l := range r.Lines {
		st := b.stock[l.SKU]
		st.Available -= l.Qty
		st.Reserved += l.Qty
		if r.BuyerID != "" {
			b.usage[[2]string{l.SKU, r.BuyerID}] += l.Qty
		}
	}
	b.reservations[r.ID] = clone(r)
	return r, nil
}

// check says why line l cannot be reserved for buyer, or nil.
func (b *memBackend) check(l inventory.Line, buyer string) error {
	st, ok := b.stock[l.SKU]
	switch {
	case !ok:
		return &inventory.UnknownSKUError{SKU: l.SKU}
	case st.Available < l.Qty:
		return &inventory.InsufficientStockError{SKU: l.SKU, Requested: l.Qty, Available: st.Available}
	case st.BuyerLimit > 0 && buyer == "":
		return &inventory.BuyerLimitError{SKU: l.SKU, Limit: st.BuyerLimit, Requested: l.Qty}
	case st.BuyerLimit > 0:
		if used := b.usage[[2]string{l.SKU, buyer}]; used+l.Qty > st.BuyerLimit {
			return &inventory.BuyerLimitError{SKU: l.SKU, BuyerID: buyer, Limit: st.BuyerLimit, Used: used, Requested: l.Qty}
		}
	}
	return nil
}

func (b *memBackend) Commit(ctx context.Context, id string, now time.Time) (inventory.State, error) {
	return b.resolve(ctx, id, now, inventory.StateReserved, inventory.StateCommitted)
}

func (b *memBackend) Release(ctx context.Context, id string, now time.Time) (inventory.State, error) {
	return b.resolve(ctx, id, now, inventory.StateReserved, inventory.StateReleased)
}

func (b *memBackend) Return(ctx context.Context, id string, now time.Time) (inventory.State, error) {
	return b.resolve(ctx, id, now, inventory.StateCommitted, inventory.StateReturned)
}

// resolve moves reservation id from state from to state to (to expired instead when a
// reserved one is past its deadline) and returns its final state; a reservation in
// another state stays as it is.
func (b *memBackend) resolve(ctx context.Context, id string, now time.Time, from, to inventory.State) (inventory.State, error) {
	if err := b.lock(ctx); err != nil {
		return "", err
	}
	defer b.mu.Unlock()
	r, ok := b.reservations[id]
	if !ok {
		return "", inventory.NotFound(id)
	}
	if r.State != from {
		return r.State, nil
	}
	if from == inventory.StateReserved && !now.Before(r.ExpiresAt) {
		to = inventory.StateExpired
	}
	b.move(r, to, now)
	return to, nil
}

// move records r as resolved to state to at now and moves its units accordingly.
func (b *memBackend) move(r inventory.Reservation, to inventory.State, now time.Time) {
	for _, l := range r.Lines {
		st := b.stock[l.SKU]
		switch to {
		case inventory.StateCommitted:
			st.Reserved -= l.Qty
			st.Sold += l.Qty
		case inventory.StateReturned:
			st.Sold -= l.Qty
			st.Available += l.Qty
		default: // released or expired
			st.Reserved -= l.Qty
			st.Available += l.Qty
		}
		if r.BuyerID != "" && to != inventory.StateCommitted {
			b.usage[[2]string{l.SKU, r.BuyerID}] -= l.Qty
		}
	}
	r.State, r.ResolvedAt = to, now
	b.reservations[r.ID] = r
}

func (b *memBackend) Get(ctx context.Context, id string) (inventory.Reservation, error) {
	if err := b.lock(ctx); err != nil {
		return inventory.Reservation{}, err
	}
	defer b.mu.Unlock()
	r, ok := b.reservations[id]
	if !ok {
		return inventory.Reservation{}, inventory.NotFound(id)
	}
	return clone(r), nil
}

func (b *memBackend) Expire(ctx context.Context, now time.Time, limit int) (int, error) {
	if err := b.lock(ctx); err != nil {
		return 0, err
	}
	defer b.mu.Unlock()
	var due []inventory.Reservation
	for _, r := range b.reservations {
		if r.State == inventory.StateReserved && !r.ExpiresAt.After(now) {
			due = append(due, r)
		}
	}
	slices.SortFunc(due, func(x, y inventory.Reservation) int { return x.ExpiresAt.Compare(y.ExpiresAt) })
	due = due[:min(limit, len(due))]
	for _, r := range due {
		b.move(r, inventory.StateExpired, now)
	}
	return len(due), nil
}

func (b *memBackend) SetStock(ctx context.Context, s inventory.StockSetting) (inventory.Stock, error) {
	if err := b.lock(ctx); err != nil {
		return inventory.Stock{}, err
	}
	defer b.mu.Unlock()
	st, ok := b.stock[s.SKU]
	if !ok {
		st = &inventory.Stock{SKU: s.SKU}
		b.stock[s.SKU] = st
	} else if s.OnHand < st.Reserved {
		return inventory.Stock{}, &inventory.InsufficientStockError{SKU: s.SKU, Requested: stockOf(st).OnHand - s.OnHand, Available: st.Available}
	}
	st.Available, st.BuyerLimit = s.OnHand-st.Reserved, s.BuyerLimit
	return stockOf(st), nil
}

func (b *memBackend) Adjust(ctx context.Context, a inventory.Adjustment, _ time.Time) (inventory.Stock, error) {
	if err := b.lock(ctx); err != nil {
		return inventory.Stock{}, err
	}
	defer b.mu.Unlock()
	st, ok := b.stock[a.SKU]
	prev, seen := b.adjustments[a.ID]
	switch {
	case seen && prev != a:
		return inventory.Stock{}, inventory.NewConflictError("adjustment", a.ID)
	case seen:
		return stockOf(st), nil // a replay: the stock as it is now
	case !ok:
		return inventory.Stock{}, &inventory.UnknownSKUError{SKU: a.SKU}
	case st.Available+a.Delta < 0:
		return inventory.Stock{}, &inventory.InsufficientStockError{SKU: a.SKU, Requested: -a.Delta, Available: st.Available}
	case a.Delta > 0 && st.Available+st.Reserved+a.Delta > inventory.MaxOnHand:
		return inventory.Stock{}, inventory.OnHandPastMax(a.SKU, st.Available+st.Reserved, a.Delta)
	}
	b.adjustments[a.ID] = a
	st.Available += a.Delta
	return stockOf(st), nil
}

func (b *memBackend) Stocks(ctx context.Context, skus []string) (map[string]inventory.Stock, error) {
	if err := b.lock(ctx); err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	out := make(map[string]inventory.Stock, len(skus))
	for _, sku := range skus {
		if st, ok := b.stock[sku]; ok {
			out[sku] = stockOf(st)
		}
	}
	return out, nil
}

// stockOf returns a copy of st with its on-hand count: the units available or reserved
// (sold ones have left).
func stockOf(st *inventory.Stock) inventory.Stock {
	out := *st
	out.OnHand = st.Available + st.Reserved
	return out
}

// clone copies r with lines of its own, so a caller never shares the stored slice.
func clone(r inventory.Reservation) inventory.Reservation {
	r.Lines = slices.Clone(r.Lines)
	return r
}
