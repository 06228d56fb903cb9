package redisinventory_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// TestTwoDurablesResolveConcurrently: two journaled backends on one journal and one Redis
// (two server instances) resolve overlapping reservations at once, in random batches: no
// caller fails, each answer is the journal's final state or one it passed through, and
// the stock in Redis is exactly what the journal's final states hold, seen from either.
func TestTwoDurablesResolveConcurrently(t *testing.T) {
	ctx := context.Background()
	d1, rdb, db := newDurable(t)
	d2 := testkit.Must(redisinventory.NewDurable(rdb, db))(t)
	inv := testkit.Must(inventory.New(d1))(t)
	setStock(t, inv, "s", 10_000, 0)
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	const n = 300
	var rs []inventory.Reservation
	for i := range n {
		rs = append(rs, inventory.Reservation{ID: fmt.Sprintf("r%03d", i), Lines: line("s", int64(1+i%3)),
			State: inventory.StateReserved, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)})
	}
	_, errs := redisinventory.ReserveBatch(ctx, d1, rs...)
	for _, err := range errs {
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	answers := map[string][]inventory.State{} // per ID, every state a caller was answered
	for w := range 8 {
		d := []*redisinventory.Durable{d1, d2}[w%2]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range 40 {
				var xs []redisinventory.Resolution
				seen := map[string]bool{}
				for range 1 + rng.IntN(12) {
					id := fmt.Sprintf("r%03d", rng.IntN(n))
					if seen[id] {
						continue
					}
					seen[id] = true
					to := []inventory.State{inventory.StateCommitted, inventory.StateReleased, inventory.StateReturned}[rng.IntN(3)]
					xs = append(xs, redisinventory.Resolution{ID: id, To: to, Now: t0.Add([]time.Duration{time.Minute, 2 * time.Hour}[rng.IntN(2)])})
				}
				states, errs := redisinventory.ResolveBatch(ctx, d, xs...)
				mu.Lock()
				for i, err := range errs {
					if err != nil {
						failures = append(failures, fmt.Sprintf("%s %s: %v", xs[i].To, xs[i].ID, err))
					} else {
						answers[xs[i].ID] = append(answers[xs[i].ID], states[i])
					}
				}
				mu.Unlock()
			}
		})
	}
	for _, d := range []*redisinventory.Durable{d1, d2} {
		wg.Go(func() {
			for range 30 {
				if _, err := d.Expire(ctx, t0.Add(90*time.Minute), 7); err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("expire: %v", err))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	assert.Empty(t, failures)
	var rows []struct {
		ID    string `bun:"id"`
		State string `bun:"state"`
	}
	require.NoError(t, db.NewRaw(`SELECT id, state FROM inventory_journal_reservations ORDER BY id`).Scan(ctx, &rows))
	// A state answered is the final one, or (committed) one the reservation left only
	// for returned.
	var reserved, sold int64
	for i, r := range rows {
		final := inventory.State(r.State)
		for _, st := range answers[r.ID] {
			if st != final && (st != inventory.StateCommitted || final != inventory.StateReturned) && st != inventory.StateReserved {
				t.Errorf("%s: answered %s, ends %s", r.ID, st, final)
			}
		}
		q := int64(1 + i%3)
		switch final {
		case inventory.StateReserved:
			reserved += q
		case inventory.StateCommitted:
			sold += q
		}
	}
	t.Logf("reserved %d, sold %d units; %d rows", reserved, sold, len(rows))
	wantStock(t, inv, "s", 10_000-sold, 10_000-sold-reserved, sold)
	inv2 := testkit.Must(inventory.New(d2))(t)
	wantStock(t, inv2, "s", 10_000-sold, 10_000-sold-reserved, sold)
}
