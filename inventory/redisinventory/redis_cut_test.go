package redisinventory_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/inventory"
)

// TestDurableRedisStepCut: the Redis step of a positive Adjust (its script, run after the
// journal's commit) and of a SetStock (its script, run inside the journal's transaction)
// has its Redis connection cut, before the script reaches Redis (it never ran) and once
// Redis answered it (it ran, its answer lost). The caller cannot tell the two apart, nor
// can a replay: either way it gets a 503 rebuilding (DependencyRebuilding, with its
// Retry-After), the heal rebuilds Redis, and Redis then holds exactly what the journal
// holds (the adjustment, which committed; not the setting, which rolled back). The retry
// with the same adjustment ID, or the same setting, then leaves exactly the stock asked
// for, once: on hand, available and sold, in Redis and in the journal.
func TestDurableRedisStepCut(t *testing.T) {
	ctx := context.Background()
	db := testenv.MySQL(t)
	rdb, linked, link := testenv.LinkedRedis(t)
	d, inv, cutD, cutInv := durables(t, rdb, db, linked, db)
	healed, err := cutD.Heal(ctx)
	require.NoError(t, err)
	require.False(t, healed, "Redis holds the journal's generation")

	// prepare gives sku 10 on hand, 3 of them sold and 2 reserved: on hand 7, available 5.
	prepare := func(sku string) {
		t.Helper()
		setStock(t, inv, sku, 10, 0)
		_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "paid-" + sku, Lines: line(sku, 3), TTL: time.Hour})
		require.NoError(t, err)
		require.NoError(t, inv.Commit(ctx, "paid-"+sku))
		_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "live-" + sku, Lines: line(sku, 2), TTL: time.Hour})
		require.NoError(t, err)
		wantStock(t, inv, sku, 7, 5, 3)
	}
	// script matches the script call (EVALSHA, or EVAL) naming key.
	script := func(key string) func(string) bool {
		return func(q string) bool {
			q = strings.ToLower(q)
			return (strings.HasPrefix(q, "evalsha ") || strings.HasPrefix(q, "eval ")) && strings.Contains(q, " "+strings.ToLower(key)+" ")
		}
	}
	type op struct {
		name string
		run  func(inv *inventory.Inventory, sku string) error
		// key is a key the operation's script call names; fault and done are sku's stock
		// (on hand, available, sold) and journal (base, adjustments) after the cut and the
		// heal, and after the retry.
		key         func(sku string) string
		fault, done [5]int64
		// closed: until the rebuild, Redis may hold more than the journal (a setting that
		// rolled back), so a reservation of units only Redis may have is never sold:
		// refused with a 503 rebuilding (the script ran: Redis fails closed), or as out of
		// stock (it never ran: Redis holds the journal's count).
		closed bool
	}
	ops := []op{{
		name: "adjust",
		run: func(inv *inventory.Inventory, sku string) error {
			_, err := inv.Adjust(ctx, inventory.Adjustment{ID: "adj-" + sku, SKU: sku, Delta: 13, Reason: "restock"})
			return err
		},
		key:   func(sku string) string { return "{inventory}:adj:adj-" + sku },
		fault: [5]int64{20, 18, 3, 23, 1}, // committed in the journal: the rebuild brings it
		done:  [5]int64{20, 18, 3, 23, 1}, // the retry is a replay: not twice
	}, {
		name: "set-stock",
		run: func(inv *inventory.Inventory, sku string) error {
			_, err := inv.SetStock(ctx, inventory.StockSetting{SKU: sku, OnHand: 30})
			return err
		},
		key:    func(sku string) string { return "{inventory}:stock:" + sku },
		fault:  [5]int64{7, 5, 3, 10, 0}, // rolled back: the journal's stock as before
		done:   [5]int64{30, 28, 3, 33, 0},
		closed: true,
	}}
	var skus []string
	state := map[string][5]int64{}
	for _, o := range ops {
		sku := o.name + "-clean" // a clean run: the scripts are loaded, nothing is cut
		prepare(sku)
		link.Arm(nil, false)
		require.NoError(t, o.run(cutInv, sku))
		_, seen := link.Disarm()
		// EVALSHA, and the first time EVAL too (NOSCRIPT): the script is loaded now, and
		// each cut run below makes one call.
		require.NotEmpty(t, matching(seen, script(o.key(sku))), "a script call names %s", o.key(sku))
		requireStock(t, inv, db, sku, o.done)
		skus, state[sku] = append(skus, sku), o.done

		for _, after := range []bool{false, true} {
			sku := o.name + map[bool]string{false: "-before", true: "-after"}[after]
			t.Run(sku, func(t *testing.T) {
				prepare(sku)
				link.Arm(script(o.key(sku)), after)
				err := o.run(cutInv, sku)
				cut, _ := link.Disarm()
				require.Len(t, cut, 1)
				requireRebuilding(t, err)
				if o.closed {
					_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "oversell-" + sku, Lines: line(sku, 20), TTL: time.Hour})
					if after {
						requireRebuilding(t, err)
					} else {
						require.ErrorIs(t, err, inventory.ErrInsufficientStock)
					}
				}
				healed, err := cutD.Heal(ctx)
				require.NoError(t, err)
				assert.True(t, healed, "the cut asked for a rebuild")
				requireStock(t, inv, db, sku, o.fault)

				require.NoError(t, o.run(cutInv, sku), "the retry")
				requireStock(t, inv, db, sku, o.done)
				require.NoError(t, o.run(inv, sku), "a replay")
				requireStock(t, inv, db, sku, o.done)
			})
			skus, state[sku] = append(skus, sku), o.done
		}
	}
	_, err = d.Rebuild(ctx)
	require.NoError(t, err)
	for _, sku := range skus {
		requireStock(t, inv, db, sku, state[sku])
	}
}

// matching returns the statements match accepts.
func matching(statements []string, match func(string) bool) []string {
	var out []string
	for _, q := range statements {
		if match(q) {
			out = append(out, q)
		}
	}
	return out
}

// requireStock checks sku's stock in Redis (on hand, available, sold) and in the journal
// (base, the number of its adjustments).
func requireStock(t *testing.T, inv *inventory.Inventory, db *bun.DB, sku string, want [5]int64) {
	t.Helper()
	ctx := context.Background()
	st, err := inv.Stock(ctx, sku)
	require.NoError(t, err)
	var base, adjustments int64
	require.NoError(t, db.QueryRowContext(ctx, `SELECT base FROM inventory_journal_stock WHERE sku = ?`, sku).Scan(&base))
	require.NoError(t, db.QueryRowContext(ctx, `SELECT COUNT(*) FROM inventory_journal_adjustments WHERE sku = ?`, sku).Scan(&adjustments))
	assert.Equal(t, want, [5]int64{st.OnHand, st.Available, st.Sold, base, adjustments},
		"%s: on hand, available, sold in Redis; base, adjustments in the journal", sku)
}

// TestDurableReservationRedisCut: Reserve's and Commit's scripts take units inside the
// journal's transaction, Release's and Return's free them after its commit; each has its
// Redis connection cut before the script reaches Redis and once Redis answered it. The
// first answer is a success or a 503 (never a domain error the state does not warrant);
// the caller's retry succeeds, and the SKU then holds exactly what a clean run of the
// same calls leaves, in Redis and (after a last rebuild from it) in the journal.
func TestDurableReservationRedisCut(t *testing.T) {
	ctx := context.Background()
	db := testenv.MySQL(t)
	rdb, linked, link := testenv.LinkedRedis(t)
	d, inv, _, cutInv := durables(t, rdb, db, linked, db)

	reserve := func(inv *inventory.Inventory, sku string) error {
		_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "r-" + sku, Lines: line(sku, 3), TTL: time.Hour})
		return err
	}
	type op struct {
		name   string
		before []func(inv *inventory.Inventory, sku string) error // uncut
		run    func(inv *inventory.Inventory, sku string) error
	}
	commit := func(inv *inventory.Inventory, sku string) error { return inv.Commit(ctx, "r-"+sku) }
	ops := []op{
		{name: "reserve", run: reserve},
		{name: "commit", before: []func(*inventory.Inventory, string) error{reserve}, run: commit},
		{name: "release", before: []func(*inventory.Inventory, string) error{reserve},
			run: func(inv *inventory.Inventory, sku string) error { return inv.Release(ctx, "r-"+sku) }},
		{name: "return", before: []func(*inventory.Inventory, string) error{reserve, commit},
			run: func(inv *inventory.Inventory, sku string) error { return inv.Return(ctx, "r-"+sku) }},
	}
	want := map[string][3]int64{}
	stockOf := func(t *testing.T, sku string) [3]int64 {
		t.Helper()
		st, err := inv.Stock(ctx, sku)
		require.NoError(t, err)
		return [3]int64{st.OnHand, st.Available, st.Sold}
	}
	for _, o := range ops {
		prepare := func(t *testing.T, sku string) {
			t.Helper()
			setStock(t, inv, sku, 10, 0)
			for _, f := range o.before {
				require.NoError(t, f(inv, sku))
			}
		}
		clean := o.name + "-clean"
		prepare(t, clean)
		require.NoError(t, o.run(cutInv, clean))
		done := stockOf(t, clean)
		want[clean] = done
		for _, after := range []bool{false, true} {
			sku := o.name + map[bool]string{false: "-before", true: "-after"}[after]
			t.Run(sku, func(t *testing.T) {
				prepare(t, sku)
				link.Arm(func(q string) bool {
					q = strings.ToLower(q)
					return strings.HasPrefix(q, "evalsha ") && strings.Contains(q, " {inventory}:res:r-"+strings.ToLower(sku)+" ")
				}, after)
				err := o.run(cutInv, sku)
				cut, _ := link.Disarm()
				require.Len(t, cut, 1)
				if err != nil {
					require.ErrorIs(t, err, errcode.ErrUnavailable, "cut at %q", cut[0])
				}
				if err := o.run(inv, sku); err != nil { // the retry, after a heal if one was asked for
					require.ErrorIs(t, err, errcode.ErrUnavailable)
					_, herr := d.Heal(ctx)
					require.NoError(t, herr)
					require.NoError(t, o.run(inv, sku), "the retry")
				}
				assert.Equal(t, done, stockOf(t, sku), "on hand, available, sold")
				want[sku] = done
			})
		}
	}
	_, err := d.Rebuild(ctx)
	require.NoError(t, err)
	for sku, w := range want {
		assert.Equal(t, w, stockOf(t, sku), "%s after a rebuild from the journal", sku)
	}
}
