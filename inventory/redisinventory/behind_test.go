package redisinventory_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// TestDurableBehindOutlivesTheProcess: a release and a positive adjustment commit in the
// journal, and their Redis step is cut before it reaches Redis: the caller gets a 503
// rebuilding, and the process asks for a rebuild. The process then dies before its heal
// runs. Another process (a restarted one, or a second server that never met the fault)
// must still rebuild at its next heal: Redis holds neither change, and no retry brings
// them (the journal holds both already, so their replays change nothing in Redis). The
// units would stay unsellable until some unrelated rebuild.
func TestDurableBehindOutlivesTheProcess(t *testing.T) {
	ctx := context.Background()
	db := testenv.MySQL(t)
	rdb, linked, link := testenv.LinkedRedis(t)
	other, inv, cutD, cutInv := durables(t, rdb, db, linked, db)
	_, err := cutD.Heal(ctx)
	require.NoError(t, err)

	setStock(t, inv, "released", 10, 0)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "r-released", Lines: line("released", 3), TTL: time.Hour})
	require.NoError(t, err)
	setStock(t, inv, "restocked", 10, 0)
	wantStock(t, inv, "released", 10, 7, 0)

	cutScript := func(key string) {
		link.Arm(func(q string) bool {
			q = strings.ToLower(q)
			return strings.HasPrefix(q, "evalsha ") && strings.Contains(q, " "+key+" ")
		}, false)
	}
	cutScript("{inventory}:res:r-released")
	err = cutInv.Release(ctx, "r-released")
	cut, _ := link.Disarm()
	require.Len(t, cut, 1)
	requireRebuilding(t, err)
	cutScript("{inventory}:adj:restock")
	_, err = cutInv.Adjust(ctx, inventory.Adjustment{ID: "restock", SKU: "restocked", Delta: 5, Reason: "restock"})
	cut, _ = link.Disarm()
	require.Len(t, cut, 1)
	requireRebuilding(t, err)
	// cutD is never used again: its process died with the rebuild it asked for.

	healed, err := other.Heal(ctx)
	require.NoError(t, err)
	assert.True(t, healed, "a server that never met the fault rebuilds at its next heal")
	wantStock(t, inv, "released", 10, 10, 0)
	wantStock(t, inv, "restocked", 15, 15, 0)

	restarted := testkit.Must(redisinventory.NewDurable(rdb, db))(t)
	healed, err = restarted.Heal(ctx)
	require.NoError(t, err)
	assert.False(t, healed, "once a rebuild has read the changes, no more")
	healed, err = other.Heal(ctx)
	require.NoError(t, err)
	assert.False(t, healed, "once a rebuild has read the changes, no more")
}

// TestDurableBehindSurvivesARestart: as above, but the process that asked for the rebuild
// is itself started again; its first heal rebuilds.
func TestDurableBehindSurvivesARestart(t *testing.T) {
	ctx := context.Background()
	db := testenv.MySQL(t)
	rdb, linked, link := testenv.LinkedRedis(t)
	_, inv, cutD, cutInv := durables(t, rdb, db, linked, db)
	_, err := cutD.Heal(ctx)
	require.NoError(t, err)
	setStock(t, inv, "sku", 10, 0)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "r", Lines: line("sku", 4), TTL: time.Hour})
	require.NoError(t, err)

	link.Arm(func(q string) bool {
		return strings.HasPrefix(strings.ToLower(q), "evalsha ") && strings.Contains(q, " {inventory}:res:r ")
	}, false)
	requireRebuilding(t, cutInv.Release(ctx, "r"))
	cut, _ := link.Disarm()
	require.Len(t, cut, 1)

	restarted := testkit.Must(redisinventory.NewDurable(rdb, db))(t)
	healed, err := restarted.Heal(ctx)
	require.NoError(t, err)
	assert.True(t, healed, "the restarted process rebuilds at its first heal")
	wantStock(t, inv, "sku", 10, 10, 0)
}
