package redisinventory_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// TestDurableAdjustCut: a positive Adjust whose journal check needs the sold units (its
// base alone is past MaxOnHand) has its MySQL connection cut before and after each of its
// statements. A cut asks for a rebuild of Redis from the journal (COMMIT's answer may be
// what was lost, and a replay does not apply the delta again); after it, the retry with
// the same ID leaves exactly the adjusted stock, in Redis and in the journal.
func TestDurableAdjustCut(t *testing.T) {
	ctx := context.Background()
	db, linked, link := testenv.LinkedMySQL(t)
	rdb := testenv.Redis(t)
	d, inv, cutD, cutInv := durables(t, rdb, db, rdb, linked)
	const maxOnHand = int64(inventory.MaxOnHand)
	prepare := func(sku string) inventory.Adjustment {
		t.Helper()
		setStock(t, inv, sku, maxOnHand-10, 0)
		_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "paid-" + sku, Lines: line(sku, 3), TTL: time.Hour})
		require.NoError(t, err)
		require.NoError(t, inv.Commit(ctx, "paid-"+sku))
		return inventory.Adjustment{ID: "adj-" + sku, SKU: sku, Delta: 13, Reason: "restock"}
	}

	a := prepare("clean")
	link.Arm(nil, false)
	_, err := cutInv.Adjust(ctx, a)
	_, statements := link.Disarm()
	require.NoError(t, err)
	require.Contains(t, strings.Join(statements, "\n"), "SUM(l.qty)", "the check needed the sold units")
	skus := []string{"clean"}
	for _, p := range testenv.CutPoints(statements, nil) {
		sku := fmt.Sprintf("cut-%t-%d", p.After, p.N)
		skus = append(skus, sku)
		t.Run(p.String(), func(t *testing.T) {
			a := prepare(sku)
			link.Arm(p.Match(), p.After)
			_, err := cutInv.Adjust(ctx, a)
			cut, _ := link.Disarm()
			require.Len(t, cut, 1)
			if err != nil {
				// Whether COMMIT ran is not known: Redis is rebuilt from the journal (the
				// healer's Run does it in a server).
				require.ErrorIs(t, err, errcode.ErrUnavailable, "cut at %q", cut[0])
				healed, err := cutD.Heal(ctx)
				require.NoError(t, err)
				require.True(t, healed, "cut at %q", cut[0])
			}
			_, err = inv.Adjust(ctx, a)
			require.NoError(t, err, "the retry")
			wantStock(t, inv, sku, maxOnHand, maxOnHand, 3)
		})
	}
	_, err = d.Rebuild(ctx)
	require.NoError(t, err)
	for _, sku := range skus {
		wantStock(t, inv, sku, maxOnHand, maxOnHand, 3)
	}
}

// TestDurableSetStockCut cuts the MySQL connection of a SetStock that raises the stock,
// before and after each of its statements: its Redis step runs inside the transaction, so
// a cut after it (the journal's row, COMMIT) leaves Redis holding a count the journal may
// not have. Right after the cut another Durable (another server) reserves 20 units, which
// only the new count has: granted only if the setting committed (a rebuild from the
// journal then finds them taken), refused otherwise (Redis fails closed until it is
// rebuilt). The retry then sets the stock, and a last rebuild finds exactly what Redis
// answered.
func TestDurableSetStockCut(t *testing.T) {
	ctx := context.Background()
	db, linked, link := testenv.LinkedMySQL(t)
	rdb := testenv.Redis(t)
	d, inv, cutD, cutInv := durables(t, rdb, db, rdb, linked)
	raise := func(sku string) inventory.StockSetting {
		t.Helper()
		setStock(t, inv, sku, 10, 0)
		_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "live-" + sku, Lines: line(sku, 3), TTL: time.Hour})
		require.NoError(t, err)
		return inventory.StockSetting{SKU: sku, OnHand: 30}
	}
	heal := func(t *testing.T) {
		t.Helper()
		for _, d := range []*redisinventory.Durable{d, cutD} {
			_, err := d.Heal(ctx)
			require.NoError(t, err)
		}
	}

	link.Arm(nil, false)
	_, err := cutInv.SetStock(ctx, raise("clean"))
	_, statements := link.Disarm()
	require.NoError(t, err)
	want := map[string]int64{"clean": 27} // available
	for _, p := range testenv.CutPoints(statements, nil) {
		sku := fmt.Sprintf("cut-%t-%d", p.After, p.N)
		t.Run(p.String(), func(t *testing.T) {
			s := raise(sku)
			link.Arm(p.Match(), p.After)
			_, err := cutInv.SetStock(ctx, s)
			cut, _ := link.Disarm()
			require.Len(t, cut, 1)
			if err != nil {
				require.ErrorIs(t, err, errcode.ErrUnavailable, "cut at %q", cut[0])
			}
			want[sku] = 27
			_, rerr := inv.Reserve(ctx, inventory.ReserveRequest{ID: "big-" + sku, Lines: line(sku, 20), TTL: time.Hour})
			if rerr == nil {
				want[sku] = 7
			} else if !errors.Is(rerr, errcode.ErrUnavailable) {
				require.ErrorIs(t, rerr, inventory.ErrInsufficientStock, "cut at %q", cut[0])
			}
			// The journal, rebuilt into Redis, has the units the reservation took.
			_, err = d.Rebuild(ctx)
			require.NoError(t, err)
			st, err := inv.Stock(ctx, sku)
			require.NoError(t, err)
			if rerr == nil {
				require.Equal(t, [2]int64{30, 7}, [2]int64{st.OnHand, st.Available}, "20 units granted: cut at %q", cut[0])
			} else {
				require.Contains(t, [][2]int64{{10, 7}, {30, 27}}, [2]int64{st.OnHand, st.Available}, "cut at %q", cut[0])
			}
			heal(t)
			_, err = inv.SetStock(ctx, s)
			require.NoError(t, err, "the retry")
			wantStock(t, inv, sku, 30, want[sku], 0)
		})
	}
	_, err = d.Rebuild(ctx)
	require.NoError(t, err)
	for sku, available := range want {
		wantStock(t, inv, sku, 30, available, 0)
	}
}

// TestDurableRebuildAfterAnUncommittedSetStock: a SetStock that did not commit after its
// script left Redis's marker one generation ahead of the journal, which is the generation
// the next rebuild commits. A rebuild that then fails between that commit and its rewrite
// of Redis (its connection cut at its first read of the journal) must not leave the old
// marker passing for the new generation: the setting that never committed would be sold.
func TestDurableRebuildAfterAnUncommittedSetStock(t *testing.T) {
	ctx := context.Background()
	db, linked, link := testenv.LinkedMySQL(t)
	rdb := testenv.Redis(t)
	d, inv, cutD, cutInv := durables(t, rdb, db, rdb, linked)

	setStock(t, inv, "sku", 10, 0)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "live", Lines: line("sku", 3), TTL: time.Hour})
	require.NoError(t, err)
	link.Arm(func(q string) bool { return strings.HasPrefix(q, "UPDATE inventory_journal_stock") }, false)
	_, err = cutInv.SetStock(ctx, inventory.StockSetting{SKU: "sku", OnHand: 30})
	cut, _ := link.Disarm()
	require.Len(t, cut, 1)
	requireRebuilding(t, err)
	journal, marker, err := d.Generation(ctx)
	require.NoError(t, err)
	require.Equal(t, journal+1, marker, "the script ran: the marker is ahead")

	link.Arm(func(q string) bool {
		return strings.HasPrefix(q, "SELECT sku, base, buyer_limit FROM inventory_journal_stock")
	}, false)
	_, err = cutD.Rebuild(ctx)
	cut, _ = link.Disarm()
	require.Len(t, cut, 1)
	require.Error(t, err)

	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "big", Lines: line("sku", 20), TTL: time.Hour})
	require.ErrorIs(t, err, errcode.ErrUnavailable, "20 units only the uncommitted setting had")
	_, err = d.Heal(ctx)
	require.NoError(t, err)
	wantStock(t, inv, "sku", 10, 7, 0)
}

// durables builds the journal in db and returns one inventory's journal and Redis seen by
// two Durables, as by two servers: d on rdb and db, healed (Redis holds the journal's
// generation), and cutD on cutRDB and cutDB, one of them through a Link.
func durables(t *testing.T, rdb redis.UniversalClient, db *bun.DB, cutRDB redis.UniversalClient, cutDB *bun.DB) (
	d *redisinventory.Durable, inv *inventory.Inventory, cutD *redisinventory.Durable, cutInv *inventory.Inventory) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, redisinventory.CreateJournal(ctx, db))
	d = testkit.Must(redisinventory.NewDurable(rdb, db))(t)
	_, err := d.Heal(ctx)
	require.NoError(t, err)
	cutD = testkit.Must(redisinventory.NewDurable(cutRDB, cutDB))(t)
	return d, testkit.Must(inventory.New(d))(t), cutD, testkit.Must(inventory.New(cutD))(t)
}

// TestDurableRemovalCut: a negative Adjust has its MySQL connection cut before and after
// each of its statements. Its Redis step runs inside the transaction, so a cut after it
// (COMMIT) may leave Redis without the units while the journal never recorded the
// removal. Whatever the cut, once the healers ran (as Run does after a failure, in this
// process or another) and before any retry, Redis holds exactly what the journal does: no
// unit lost in Redis for want of a retry. The retry then removes the units once.
func TestDurableRemovalCut(t *testing.T) {
	ctx := context.Background()
	db, linked, link := testenv.LinkedMySQL(t)
	rdb := testenv.Redis(t)
	d, inv, cutD, cutInv := durables(t, rdb, db, rdb, linked)
	prepare := func(sku string) inventory.Adjustment {
		t.Helper()
		setStock(t, inv, sku, 10, 0)
		return inventory.Adjustment{ID: "adj-" + sku, SKU: sku, Delta: -3, Reason: "damaged"}
	}

	link.Arm(nil, false)
	_, err := cutInv.Adjust(ctx, prepare("clean"))
	_, statements := link.Disarm()
	require.NoError(t, err)
	skus := []string{"clean"}
	for _, p := range testenv.CutPoints(statements, nil) {
		sku := fmt.Sprintf("cut-%t-%d", p.After, p.N)
		skus = append(skus, sku)
		t.Run(p.String(), func(t *testing.T) {
			a := prepare(sku)
			link.Arm(p.Match(), p.After)
			_, err := cutInv.Adjust(ctx, a)
			cut, _ := link.Disarm()
			require.Len(t, cut, 1)
			if err != nil {
				require.ErrorIs(t, err, errcode.ErrUnavailable, "cut at %q", cut[0])
			}
			for _, d := range []*redisinventory.Durable{d, cutD} {
				_, err := d.Heal(ctx)
				require.NoError(t, err)
			}
			var recorded int64
			require.NoError(t, db.QueryRowContext(ctx, `SELECT COUNT(*) FROM inventory_journal_adjustments WHERE id = ?`, a.ID).
				Scan(&recorded))
			wantStock(t, inv, sku, 10-3*recorded, 10-3*recorded, 0)

			_, err = inv.Adjust(ctx, a)
			require.NoError(t, err, "the retry")
			wantStock(t, inv, sku, 7, 7, 0)
		})
	}
	_, err = d.Rebuild(ctx)
	require.NoError(t, err)
	for _, sku := range skus {
		wantStock(t, inv, sku, 7, 7, 0)
	}
}

// TestDurableResolveCut: a Release and a Return free units in Redis after the journal's
// commit. Each has its MySQL connection cut before and after each of its statements: a cut
// once COMMIT was answered leaves the journal holding the change while the caller sees a
// failure and Redis never saw it (a returned reservation is no longer in the due index, so
// no sweep ever settles it; a released one would hold its units until its deadline). Once
// the healers ran (as Run does after a failure, in this process or another) and before any
// retry, Redis must hold exactly what the journal does; the retry then succeeds and leaves
// the same.
func TestDurableResolveCut(t *testing.T) {
	ctx := context.Background()
	db, linked, link := testenv.LinkedMySQL(t)
	rdb := testenv.Redis(t)
	d, inv, cutD, cutInv := durables(t, rdb, db, rdb, linked)
	for _, o := range []struct {
		name   string
		commit bool // the reservation is committed first
		run    func(inv *inventory.Inventory, id string) error
		want   [3]int64 // on hand, available, sold once done
	}{
		{"release", false, func(inv *inventory.Inventory, id string) error { return inv.Release(ctx, id) }, [3]int64{10, 10, 0}},
		{"return", true, func(inv *inventory.Inventory, id string) error { return inv.Return(ctx, id) }, [3]int64{10, 10, 0}},
	} {
		prepare := func(sku string) string {
			t.Helper()
			setStock(t, inv, sku, 10, 0)
			id := "r-" + sku
			_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: line(sku, 3), TTL: time.Hour})
			require.NoError(t, err)
			if o.commit {
				require.NoError(t, inv.Commit(ctx, id))
			}
			return id
		}
		link.Arm(nil, false)
		require.NoError(t, o.run(cutInv, prepare(o.name+"-clean")))
		_, statements := link.Disarm()
		wantStock(t, inv, o.name+"-clean", o.want[0], o.want[1], o.want[2])
		for _, p := range testenv.CutPoints(statements, nil) {
			sku := fmt.Sprintf("%s-%t-%d", o.name, p.After, p.N)
			t.Run(sku, func(t *testing.T) {
				id := prepare(sku)
				link.Arm(p.Match(), p.After)
				err := o.run(cutInv, id)
				cut, _ := link.Disarm()
				require.Len(t, cut, 1)
				if err != nil {
					require.ErrorIs(t, err, errcode.ErrUnavailable, "cut at %q", cut[0])
				}
				for _, d := range []*redisinventory.Durable{d, cutD} {
					_, err := d.Heal(ctx)
					require.NoError(t, err)
				}
				before, err := inv.Stock(ctx, sku)
				require.NoError(t, err)
				_, err = d.Rebuild(ctx)
				require.NoError(t, err)
				journal, err := inv.Stock(ctx, sku)
				require.NoError(t, err)
				require.Equal(t, journal, before, "Redis holds what the journal does: cut at %q", cut[0])

				require.NoError(t, o.run(inv, id), "the retry")
				wantStock(t, inv, sku, o.want[0], o.want[1], o.want[2])
			})
		}
	}
}

// TestDurableRemovalCutThenAnotherUnderItsID: a removal's COMMIT is cut before it reaches
// the server, after its Redis step took the units: the journal holds no adjustment under
// its ID, which is free again ("a refused adjustment leaves no record of its ID"). Before
// any heal, an adjustment of other content is sent under that ID. Its answer must be what
// the journal did with it: success, or a 503 once it is recorded (the retry, a replay,
// answers it), never idempotency_key_reused while the journal holds and counts it (the
// client, told so, would restock again under another ID). Once healed, Redis holds the
// journal's count.
func TestDurableRemovalCutThenAnotherUnderItsID(t *testing.T) {
	ctx := context.Background()
	db, linked, link := testenv.LinkedMySQL(t)
	rdb := testenv.Redis(t)
	d, inv, cutD, cutInv := durables(t, rdb, db, rdb, linked)
	for _, second := range []inventory.Adjustment{
		{ID: "adj-1", SKU: "mug", Delta: 4, Reason: "restock"},
		{ID: "adj-2", SKU: "cup", Delta: -2, Reason: "damaged"},
	} {
		t.Run(second.ID, func(t *testing.T) {
			setStock(t, inv, second.SKU, 10, 0)
			link.Arm(testenv.IsCommit, false)
			_, err := cutInv.Adjust(ctx, inventory.Adjustment{ID: second.ID, SKU: second.SKU, Delta: -3, Reason: "damaged, first count"})
			cut, _ := link.Disarm()
			require.Len(t, cut, 1)
			require.ErrorIs(t, err, errcode.ErrUnavailable)

			_, err = inv.Adjust(ctx, second)
			var recorded int64
			require.NoError(t, db.QueryRowContext(ctx, `SELECT COUNT(*) FROM inventory_journal_adjustments WHERE id = ?`, second.ID).
				Scan(&recorded))
			if recorded == 1 {
				require.NotErrorIs(t, err, inventory.ErrIdempotencyConflict, "answered as reusing the ID, and recorded")
			}
			for _, d := range []*redisinventory.Durable{d, cutD} {
				_, err := d.Heal(ctx)
				require.NoError(t, err)
			}
			if err != nil && recorded == 1 {
				_, err = inv.Adjust(ctx, second) // the client's retry of a 503
				require.NoError(t, err)
			}
			want := 10 + second.Delta*recorded
			wantStock(t, inv, second.SKU, want, want, 0)
		})
	}
}

// TestDurableStrayCommitThenSetStock: a commit's Redis step runs inside its transaction,
// which then dies (its connection cut before the journal's UPDATE): Redis holds the units
// sold, the journal still reserved. An admin then sets the SKU's on-hand count, which the
// journal records against its sold units (none yet) and Redis against none reserved; the
// commit's retry then commits it in the journal while its Redis step, run already, changes
// nothing, so Redis would count on hand the units that left it before the setting: units
// to oversell. The admin retries a setting answered with a dependency failure after the
// healers ran (as Run does after a failure); whether the setting comes before the retry
// or after it (when the count set is on hand after the sale), Redis then holds what the
// journal does and sells only what is on hand, and a setting after the retry is not
// refused.
func TestDurableStrayCommitThenSetStock(t *testing.T) {
	ctx := context.Background()
	db, linked, link := testenv.LinkedMySQL(t)
	rdb := testenv.Redis(t)
	d, inv, cutD, cutInv := durables(t, rdb, db, rdb, linked)
	heal := func(t *testing.T) {
		t.Helper()
		for _, d := range []*redisinventory.Durable{d, cutD} {
			_, err := d.Heal(ctx)
			require.NoError(t, err)
		}
	}
	onHand := map[string]int64{}
	for _, setFirst := range []bool{true, false} {
		sku := fmt.Sprintf("set-before-retry-%t", setFirst)
		onHand[sku] = 10
		if setFirst {
			onHand[sku] = 7
		}
		t.Run(sku, func(t *testing.T) {
			setStock(t, inv, sku, 10, 0)
			id := "r-" + sku
			_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: line(sku, 3), TTL: time.Hour})
			require.NoError(t, err)
			link.Arm(func(q string) bool { return strings.HasPrefix(q, "UPDATE inventory_journal_reservations") }, false)
			err = cutInv.Commit(ctx, id)
			cut, _ := link.Disarm()
			require.Len(t, cut, 1)
			require.ErrorIs(t, err, errcode.ErrUnavailable)
			if setFirst {
				_, err := inv.SetStock(ctx, inventory.StockSetting{SKU: sku, OnHand: 10})
				if err != nil {
					requireRebuilding(t, err)
					heal(t)
					setStock(t, inv, sku, 10, 0)
				}
			}
			require.NoError(t, inv.Commit(ctx, id), "the retry")
			if !setFirst {
				setStock(t, inv, sku, 10, 0)
			}
			heal(t)
			wantStock(t, inv, sku, onHand[sku], onHand[sku], 3)
			_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "more-" + sku, Lines: line(sku, onHand[sku]+1), TTL: time.Hour})
			require.ErrorIs(t, err, inventory.ErrInsufficientStock)
		})
	}
	_, err := d.Rebuild(ctx)
	require.NoError(t, err)
	for sku, n := range onHand {
		wantStock(t, inv, sku, n, n, 3)
	}
}
