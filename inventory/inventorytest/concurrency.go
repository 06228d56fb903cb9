package inventorytest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/inventory"
)

// testRaceForLastUnits: 1,000 buyers race for 100 units: exactly 100 win, the rest are
// told the SKU is sold out, and nothing goes negative.
func testRaceForLastUnits(t *testing.T, h Harness) {
	inv, _, _ := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "hot", 100, 0)

	errs := raceForOne(ctx, inv, 1000, "hot", "race", func(i int) string {
		if i%2 == 0 { // half anonymous, half with a buyer: both paths of a backend race
			return id("u", i)
		}
		return ""
	})
	var won []string
	for i, err := range errs {
		if err == nil {
			won = append(won, id("race", i))
			continue
		}
		e := requireAs[*inventory.InsufficientStockError](t, err, inventory.ErrInsufficientStock)
		require.Equal(t, inventory.InsufficientStockError{SKU: "hot", Requested: 1, Available: 0}, *e)
	}
	require.Len(t, won, 100)
	wantStock(t, inv, "hot", 0, 100, 0)

	var wg sync.WaitGroup
	for _, w := range won {
		wg.Go(func() { assert.NoError(t, inv.Commit(ctx, w)) })
	}
	wg.Wait()
	wantStock(t, inv, "hot", 0, 0, 100)
}

// testRaceBuyerLimit: one buyer racing with itself gets exactly its limit, while other
// buyers racing alongside each get theirs.
func testRaceBuyerLimit(t *testing.T, h Harness) {
	inv, _, _ := newInv(t, h)
	ctx := context.Background()
	setStock(t, inv, "drop", 1000, 2)

	const n = 200
	errs := raceForOne(ctx, inv, n, "drop", "r", func(i int) string {
		if i%2 == 1 {
			return id("u", i)
		}
		return "greedy"
	})
	greedy := 0
	for i, err := range errs {
		if i%2 == 1 {
			require.NoError(t, err)
			continue
		}
		if err == nil {
			greedy++
			continue
		}
		e := requireAs[*inventory.BuyerLimitError](t, err, inventory.ErrBuyerLimitExceeded)
		require.Equal(t, inventory.BuyerLimitError{SKU: "drop", BuyerID: "greedy", Limit: 2, Used: 2, Requested: 1}, *e)
	}
	assert.Equal(t, 2, greedy)
	wantStock(t, inv, "drop", 1000-2-n/2, 2+n/2, 0)
}

// raceForOne has n requests (IDs prefix-0, prefix-1, ...) reserve one unit of sku at once,
// request i for buyer(i), and returns their errors.
func raceForOne(ctx context.Context, inv *inventory.Inventory, n int, sku, prefix string, buyer func(i int) string) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = inv.Reserve(ctx, inventory.ReserveRequest{ID: id(prefix, i), Lines: lines(sku, 1), TTL: time.Hour, BuyerID: buyer(i)})
		})
	}
	wg.Wait()
	return errs
}

// testStorm runs reserves, commits, releases, restocks, sweeps and a moving clock at once,
// then checks the books exactly: on hand plus sold equals what was stocked, reserved equals
// the live reservations, sold equals the committed ones, nothing is negative, and every
// buyer's remaining allowance is exact.
func testStorm(t *testing.T, h Harness) {
	inv, clk, _ := newInv(t, h, inventory.WithSweepBatch(16))
	ctx := context.Background()
	skus := []string{"s0", "s1", "s2", "s3", "s4"}
	const initial, limit = 60, 4 // little enough stock that SKUs run out
	for _, s := range skus[:4] {
		setStock(t, inv, s, initial, 0)
	}
	setStock(t, inv, "s4", initial, limit)
	buyers := []string{"b0", "b1", "b2", "b3", "b4", "b5"}

	var (
		mu       sync.Mutex
		reserved []string
		restock  = map[string]int64{}
		adjSeq   atomic.Int64
		refused  atomic.Int64
	)
	stop := make(chan struct{})
	var background sync.WaitGroup
	background.Go(func() { // the sweeper, while the clock moves with the work
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, err := inv.Sweep(ctx)
			assert.NoError(t, err)
		}
	})
	const workers, ops = 24, 30
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for op := range ops {
				if rng.IntN(4) == 0 {
					clk.Advance(time.Second) // time moves with the work, whatever the backend's speed
				}
				if rng.IntN(10) == 0 {
					sku := skus[rng.IntN(len(skus))]
					d := int64(1 + rng.IntN(5))
					_, err := inv.Adjust(ctx, inventory.Adjustment{ID: id("adj", int(adjSeq.Add(1))), SKU: sku, Delta: d, Reason: "restock"})
					if assert.NoError(t, err) {
						mu.Lock()
						restock[sku] += d
						mu.Unlock()
					}
					continue
				}
				var ls []inventory.Line
				for range 1 + rng.IntN(3) {
					ls = append(ls, inventory.Line{SKU: skus[rng.IntN(len(skus))], Qty: int64(1 + rng.IntN(3))})
				}
				rid := fmt.Sprintf("w%d-%d", w, op)
				buyer := buyers[rng.IntN(len(buyers))]
				ttl := time.Duration(1+rng.IntN(40)) * time.Second
				_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: rid, Lines: ls, TTL: ttl, BuyerID: buyer})
				switch {
				case err == nil:
					mu.Lock()
					reserved = append(reserved, rid)
					mu.Unlock()
				case errors.Is(err, inventory.ErrInsufficientStock), errors.Is(err, inventory.ErrBuyerLimitExceeded):
					refused.Add(1)
					continue
				default:
					t.Errorf("reserve %s: %v", rid, err)
					continue
				}
				switch rng.IntN(10) {
				case 0, 1, 2, 3:
					if err := inv.Commit(ctx, rid); err != nil && !errors.Is(err, inventory.ErrReservationExpired) {
						t.Errorf("commit %s: %v", rid, err)
					}
				case 4, 5, 6:
					if err := inv.Release(ctx, rid); err != nil && !errors.Is(err, inventory.ErrReservationExpired) {
						t.Errorf("release %s: %v", rid, err)
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	background.Wait()
	require.False(t, t.Failed())
	require.NotEmpty(t, reserved)

	// The books, with reservations still live.
	checkBooks := func() map[inventory.State]int {
		states := map[inventory.State]int{}
		live, sold := map[string]int64{}, map[string]int64{}
		soldTo := map[string]int64{} // s4 units sold per buyer
		for _, rid := range reserved {
			r, err := inv.Get(ctx, rid)
			require.NoError(t, err)
			states[r.State]++
			for _, l := range r.Lines {
				switch r.State {
				case inventory.StateReserved:
					live[l.SKU] += l.Qty
				case inventory.StateCommitted:
					sold[l.SKU] += l.Qty
					if l.SKU == "s4" {
						soldTo[r.BuyerID] += l.Qty
					}
				}
			}
		}
		m, err := inv.Stocks(ctx, skus)
		require.NoError(t, err)
		for _, s := range skus {
			st := m[s]
			assert.GreaterOrEqual(t, st.Available, int64(0), s)
			assert.Equal(t, live[s], st.Reserved, "%s: reserved = sum of live reservations", s)
			assert.Equal(t, sold[s], st.Sold, "%s: sold = sum of committed reservations", s)
			assert.Equal(t, initial+restock[s], st.OnHand+st.Sold, "%s: on hand + sold = stocked", s)
		}
		for _, b := range buyers {
			assert.LessOrEqual(t, soldTo[b], int64(limit), "s4 sold to %s", b)
		}
		return states
	}
	states := checkBooks()
	t.Logf("storm: %d reservations, %d refused, %v", len(reserved), refused.Load(), states)

	// Expire the rest, then check again, including every buyer's exact remaining allowance.
	clk.Advance(time.Hour)
	n, err := inv.Sweep(ctx)
	require.NoError(t, err)
	assert.Equal(t, states[inventory.StateReserved], n)
	states = checkBooks()
	assert.Zero(t, states[inventory.StateReserved])
	soldTo := map[string]int64{}
	for _, rid := range reserved {
		r, err := inv.Get(ctx, rid)
		require.NoError(t, err)
		for _, l := range r.Lines {
			if r.State == inventory.StateCommitted && l.SKU == "s4" {
				soldTo[r.BuyerID] += l.Qty
			}
		}
	}
	setStock(t, inv, "s4", stock(t, inv, "s4").OnHand+100, limit)
	for _, b := range buyers {
		if left := limit - soldTo[b]; left > 0 {
			reserve(t, inv, "last-"+b, b, inventory.Line{SKU: "s4", Qty: left})
		}
		_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "over-" + b, Lines: lines("s4", 1), BuyerID: b})
		e := requireAs[*inventory.BuyerLimitError](t, err, inventory.ErrBuyerLimitExceeded)
		assert.Equal(t, int64(limit), e.Used, b)
	}
}
