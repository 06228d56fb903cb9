package redisinventory_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// TestRandomBatchesAreSequential: random batches (several lines, buyer limits, unknown
// SKUs, replays and conflicts, replays of resolved reservations, and for the Durable the
// Redis halves of rolled-back attempts, live and dead) answer and leave exactly what the
// same reservations one at a time do: answers, stock, buyer usage, due index with its
// scores, and records.
func TestRandomBatchesAreSequential(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	for _, durable := range []bool{false, true} {
		for seed := uint64(1); seed <= 10; seed++ {
			batched := randomBatches(t, seed, now, durable, true)
			alone := randomBatches(t, seed, now, durable, false)
			require.Equal(t, alone, batched, "seed %d, durable %v", seed, durable)
		}
	}
}

// randomBatches runs four rounds of 20 random reservations, each round in one batch or one
// reservation at a time, resolving some between rounds, and returns what it saw.
func randomBatches(t *testing.T, seed uint64, now time.Time, durable, batched bool) []string {
	ctx := context.Background()
	var be inventory.Backend
	var rdb *redis.Client
	if durable {
		be, rdb, _ = newDurable(t)
	} else {
		rdb = testenv.Redis(t)
		be = testkit.Must(redisinventory.New(rdb))(t)
	}
	plain := testkit.Must(redisinventory.New(rdb))(t) // the Redis half of a Durable's rolled-back attempts
	inv := testkit.Must(inventory.New(be))(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	skus := []string{"s0", "s1", "s2", "s3"}
	for i, sku := range skus {
		setStock(t, inv, sku, int64(3+rng.IntN(8)), int64([]int{0, 2, 3, 0}[i]))
	}
	var seen []string
	for range 4 {
		var rs []inventory.Reservation
		ids := map[string]bool{}
		for range 20 {
			id := fmt.Sprintf("r%d", rng.IntN(40))
			var lines []inventory.Line
			for _, p := range rng.Perm(len(skus))[:1+rng.IntN(3)] {
				lines = append(lines, inventory.Line{SKU: skus[p], Qty: int64(1 + rng.IntN(3))})
			}
			if rng.IntN(10) == 0 {
				lines = append(lines, inventory.Line{SKU: "zz", Qty: 1})
			}
			slices.SortFunc(lines, func(a, b inventory.Line) int { return strings.Compare(a.SKU, b.SKU) })
			if durable && ids[id] {
				continue // groupcommit never puts one ID twice in a batch
			}
			ids[id] = true
			rs = append(rs, inventory.Reservation{ID: id, BuyerID: []string{"", "b1", "b2"}[rng.IntN(3)], Lines: lines,
				State: inventory.StateReserved, CreatedAt: now, ExpiresAt: now.Add(time.Duration(1+rng.IntN(100)) * time.Minute)})
		}
		if durable {
			for range 3 {
				r := rs[rng.IntN(len(rs))]
				r.ID = fmt.Sprintf("r%d", rng.IntN(40))
				if _, err := be.Get(ctx, r.ID); err == nil {
					continue
				}
				if _, errs := redisinventory.ReserveBatch(ctx, plain, r); errs[0] == nil && rng.IntN(2) == 0 {
					_, err := plain.Release(ctx, r.ID, now)
					require.NoError(t, err)
				}
			}
		}
		got, errs := inBatches(batched, rs, func(rs ...inventory.Reservation) ([]inventory.Reservation, []error) {
			return redisinventory.ReserveBatch(ctx, be, rs...)
		})
		for i, r := range rs {
			switch {
			case errors.Is(errs[i], inventory.ErrIdempotencyConflict):
				seen = append(seen, r.ID+": conflict")
			case errs[i] != nil:
				seen = append(seen, r.ID+": "+errs[i].Error())
			default:
				seen = append(seen, fmt.Sprintf("%s: %s %d", got[i].ID, got[i].State, got[i].ExpiresAt.UnixMilli()))
			}
		}
		for i := 0; i < 40; i += 3 + rng.IntN(4) {
			id := fmt.Sprintf("r%d", i)
			if rng.IntN(2) == 0 {
				_, _ = be.Release(ctx, id, now) // not found or not reserved: as may be
			} else {
				_, _ = be.Commit(ctx, id, now)
			}
		}
	}
	return append(seen, redisState(t, inv, rdb, skus, 40, false)...)
}

// inBatches runs xs through run in one batch, or one at a time, and returns the answers.
func inBatches[X, Y any](batched bool, xs []X, run func(xs ...X) ([]Y, []error)) ([]Y, []error) {
	if batched {
		return run(xs...)
	}
	var out []Y
	var errs []error
	for _, x := range xs {
		y, e := run(x)
		out, errs = append(out, y[0]), append(errs, e[0])
	}
	return out, errs
}

// redisState returns what Redis holds: each SKU's stock and buyer usage, the due index with
// its scores, and the records of r0 to r<records-1> (with their resolution times when
// resolved is set).
func redisState(t *testing.T, inv *inventory.Inventory, rdb *redis.Client, skus []string, records int, resolved bool) []string {
	ctx := context.Background()
	var seen []string
	for _, sku := range skus {
		st, err := inv.Stock(ctx, sku)
		require.NoError(t, err)
		usage, err := rdb.HGetAll(ctx, "{inventory}:buyers:"+sku).Result()
		require.NoError(t, err)
		seen = append(seen, fmt.Sprintf("%s: %d %d %d %v", sku, st.OnHand, st.Available, st.Sold, usage))
	}
	due, err := rdb.ZRangeWithScores(ctx, "{inventory}:due", 0, -1).Result()
	require.NoError(t, err)
	seen = append(seen, fmt.Sprint(due))
	for i := range records {
		rec, err := rdb.HGetAll(ctx, fmt.Sprintf("{inventory}:res:r%d", i)).Result()
		require.NoError(t, err)
		if !resolved {
			delete(rec, "resolved")
		}
		seen = append(seen, fmt.Sprint(rec))
	}
	return seen
}

// TestLargestBatch: a batch of MaxBatch reservations of MaxLines lines each, with a buyer
// (12,929 keys), of the largest quantities on the largest stock, is reserved whole.
func TestLargestBatch(t *testing.T) {
	ctx := context.Background()
	d, _, _ := newDurable(t)
	for _, be := range []inventory.Backend{testkit.Must(redisinventory.New(testenv.Redis(t)))(t), d} {
		inv := testkit.Must(inventory.New(be))(t)
		var lines []inventory.Line
		for i := range inventory.MaxLines {
			sku := fmt.Sprintf("sku%02d", i)
			setStock(t, inv, sku, inventory.MaxOnHand, 128*inventory.MaxQtyPerSKU)
			lines = append(lines, inventory.Line{SKU: sku, Qty: inventory.MaxQtyPerSKU})
		}
		now := time.Now().UTC().Truncate(time.Millisecond)
		rs := make([]inventory.Reservation, 128)
		for i := range rs {
			rs[i] = inventory.Reservation{ID: fmt.Sprintf("big-%03d", i), BuyerID: "b", Lines: lines,
				State: inventory.StateReserved, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		}
		_, errs := redisinventory.ReserveBatch(ctx, be, rs...)
		require.NoError(t, errors.Join(errs...))
		for _, sku := range []string{"sku00", "sku49"} {
			wantStock(t, inv, sku, inventory.MaxOnHand, inventory.MaxOnHand-128*inventory.MaxQtyPerSKU, 0)
		}
	}
}

// TestRandomResolveBatchesAreSequential: random batches of commits, releases and returns
// on a Durable (each at its own time, some past the reservation's deadline; replays of
// reservations resolved before, in the batch's round or by a sweep; unknown IDs; Redis
// records lost) answer and leave exactly what the same calls one at a time do: answers,
// journal rows, stock, buyer usage, due index with its scores, and records.
func TestRandomResolveBatchesAreSequential(t *testing.T) {
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	for seed := uint64(1); seed <= 10; seed++ {
		batched := randomResolves(t, seed, t0, true)
		alone := randomResolves(t, seed, t0, false)
		require.Equal(t, alone, batched, "seed %d", seed)
	}
}

// randomResolves reserves 30 random reservations, then runs four rounds of up to 20
// random resolutions, each round in one batch or one at a time, with a sweep between
// rounds, and returns what it saw.
func randomResolves(t *testing.T, seed uint64, t0 time.Time, batched bool) []string {
	ctx := context.Background()
	d, rdb, db := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	rng := rand.New(rand.NewPCG(seed, 11))
	skus := []string{"s0", "s1", "s2"}
	for i, sku := range skus {
		setStock(t, inv, sku, 100, int64([]int{0, 100, 0}[i]))
	}
	var rs []inventory.Reservation
	for i := range 30 {
		buyer := []string{"", "b1", "b2"}[rng.IntN(3)]
		var lines []inventory.Line
		for _, p := range rng.Perm(len(skus))[:1+rng.IntN(3)] {
			if buyer != "" || p != 1 { // s1 has a buyer limit
				lines = append(lines, inventory.Line{SKU: skus[p], Qty: int64(1 + rng.IntN(3))})
			}
		}
		if len(lines) == 0 {
			lines = append(lines, inventory.Line{SKU: "s0", Qty: 1})
		}
		slices.SortFunc(lines, func(a, b inventory.Line) int { return strings.Compare(a.SKU, b.SKU) })
		rs = append(rs, inventory.Reservation{ID: fmt.Sprintf("r%d", i), BuyerID: buyer, Lines: lines,
			State: inventory.StateReserved, CreatedAt: t0, ExpiresAt: t0.Add(time.Duration(1+rng.IntN(100)) * time.Minute)})
	}
	_, errs := redisinventory.ReserveBatch(ctx, d, rs...)
	require.NoError(t, errors.Join(errs...))
	var seen []string
	for round := range 4 {
		if id := fmt.Sprintf("r%d", rng.IntN(30)); rng.IntN(2) == 0 {
			require.NoError(t, rdb.Del(ctx, "{inventory}:res:"+id).Err()) // Redis lost one record
		}
		var xs []redisinventory.Resolution
		ids := map[string]bool{}
		for range 20 {
			id := fmt.Sprintf("r%d", rng.IntN(33)) // r30-r32: unknown
			if ids[id] {
				continue
			}
			ids[id] = true
			to := []inventory.State{inventory.StateCommitted, inventory.StateCommitted, inventory.StateCommitted,
				inventory.StateReleased, inventory.StateReturned}[rng.IntN(5)]
			xs = append(xs, redisinventory.Resolution{ID: id, To: to, Now: t0.Add(time.Duration(rng.IntN(80)) * time.Minute)})
		}
		states, errs := inBatches(batched, xs, func(xs ...redisinventory.Resolution) ([]inventory.State, []error) {
			return redisinventory.ResolveBatch(ctx, d, xs...)
		})
		for i, x := range xs {
			if errs[i] != nil {
				seen = append(seen, fmt.Sprintf("%d %s %s: %v", round, x.To, x.ID, errs[i]))
			} else {
				seen = append(seen, fmt.Sprintf("%d %s %s: %s", round, x.To, x.ID, states[i]))
			}
		}
		n, err := d.Expire(ctx, t0.Add(time.Duration(20*(round+1))*time.Minute), 100)
		require.NoError(t, err)
		seen = append(seen, fmt.Sprintf("%d expired %d", round, n))
	}
	var rows []struct {
		ID         string `bun:"id"`
		State      string `bun:"state"`
		ResolvedAt int64  `bun:"resolved_at"`
	}
	require.NoError(t, db.NewRaw(`SELECT id, state, resolved_at FROM inventory_journal_reservations ORDER BY id`).Scan(ctx, &rows))
	seen = append(seen, fmt.Sprint(rows))
	return append(seen, redisState(t, inv, rdb, skus, 30, true)...)
}
