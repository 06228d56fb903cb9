package redisinventory_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
	require.NoError(t, redisinventory.CreateJournal(ctx, db))
	d := testkit.Must(redisinventory.NewDurable(rdb, db))(t)
	_, err := d.Heal(ctx)
	require.NoError(t, err)
	inv := testkit.Must(inventory.New(d))(t)
	cutD := testkit.Must(redisinventory.NewDurable(rdb, linked))(t)
	cutInv := testkit.Must(inventory.New(cutD))(t)
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
	_, err = cutInv.Adjust(ctx, a)
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
