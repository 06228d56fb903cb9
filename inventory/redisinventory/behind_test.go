package redisinventory_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// TestDurableBehindOutlivesTheProcess: a release and a positive adjustment commit in the
// journal, and their Redis step is cut before it reaches Redis: the caller gets a 503
// rebuilding, and the process asks for a rebuild. The process then dies before its heal
// runs. Another process (a second server that never met the fault, or the one restarted)
// must still rebuild at its next heal: Redis holds neither change, and no retry brings
// them (the journal holds both already, so their replays change nothing in Redis). The
// units would otherwise stay unsellable until some unrelated rebuild. Once a rebuild has
// read the changes, no heal rebuilds again.
func TestDurableBehindOutlivesTheProcess(t *testing.T) {
	ctx := context.Background()
	// cutD's heal never runs: its process died with the rebuild it asked for.
	rdb, link, db, other, inv, _, cutInv := cutDurables(t)
	// cut runs op in cutD with the script call naming key cut before it reaches Redis.
	cut := func(t *testing.T, key string, op func() error) {
		t.Helper()
		requireRebuilding(t, cutCommand(t, link, "evalsha", key+" ", op))
	}
	for _, healer := range []struct {
		name string
		d    func(t *testing.T) *redisinventory.Durable
	}{
		{"another-server", func(*testing.T) *redisinventory.Durable { return other }},
		{"restarted", func(t *testing.T) *redisinventory.Durable { return testkit.Must(redisinventory.NewDurable(rdb, db))(t) }},
	} {
		t.Run(healer.name, func(t *testing.T) {
			released, restocked := healer.name+"-released", healer.name+"-restocked"
			setStock(t, inv, released, 10, 0)
			setStock(t, inv, restocked, 10, 0)
			_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "r-" + released, Lines: line(released, 3), TTL: time.Hour})
			require.NoError(t, err)
			cut(t, "{inventory}:res:r-"+released, func() error { return cutInv.Release(ctx, "r-"+released) })
			cut(t, "{inventory}:adj:a-"+restocked, func() error {
				_, err := cutInv.Adjust(ctx, inventory.Adjustment{ID: "a-" + restocked, SKU: restocked, Delta: 5, Reason: "restock"})
				return err
			})

			d := healer.d(t)
			healed, err := d.Heal(ctx)
			require.NoError(t, err)
			assert.True(t, healed, "the next heal rebuilds")
			wantStock(t, inv, released, 10, 10, 0)
			wantStock(t, inv, restocked, 15, 15, 0)
			for _, d := range []*redisinventory.Durable{d, other} {
				healed, err = d.Heal(ctx)
				require.NoError(t, err)
				assert.False(t, healed, "once a rebuild has read the changes, no more")
			}
		})
	}
}

// TestDurableFailedHealKeepsTheRequest: a SKU key goes missing under a good marker, so the
// next heal must rebuild; that heal fails on Redis before it has dropped the marker (the
// marker, still good, would not ask for a rebuild by itself). The heal after it must still
// rebuild: a failed heal forgets no request.
func TestDurableFailedHealKeepsTheRequest(t *testing.T) {
	ctx := context.Background()
	rdb, link, _, _, inv, cutD, cutInv := cutDurables(t)
	setStock(t, inv, "sku", 10, 0)
	require.NoError(t, rdb.Del(ctx, "{inventory}:stock:sku").Err())
	_, err := cutInv.Stock(ctx, "sku")
	requireRebuilding(t, err)

	require.Error(t, cutCommand(t, link, "del", "{inventory}:generation", func() error {
		_, err := cutD.Heal(ctx)
		return err
	}), "the heal's drop of the marker is cut")

	healed, err := cutD.Heal(ctx)
	require.NoError(t, err)
	assert.True(t, healed, "the next heal rebuilds")
	wantStock(t, inv, "sku", 10, 10, 0)
}

// TestDurableAdjustReplayWhileBehind: a positive adjustment's Redis step is cut before it
// reaches Redis: the journal holds it, Redis does not, and the caller gets a 503
// rebuilding. Its retry, made before the rebuild has run, is a replay (the journal holds
// the ID): it must not answer success with the stock Redis holds, which lacks the delta,
// but the same 503, until the rebuild has brought the delta; then success, once.
func TestDurableAdjustReplayWhileBehind(t *testing.T) {
	ctx := context.Background()
	_, link, _, _, inv, cutD, cutInv := cutDurables(t)
	setStock(t, inv, "sku", 10, 0)
	restock := inventory.Adjustment{ID: "restock", SKU: "sku", Delta: 5, Reason: "restock"}

	requireRebuilding(t, cutCommand(t, link, "evalsha", "{inventory}:adj:restock ", func() error {
		_, err := cutInv.Adjust(ctx, restock)
		return err
	}))

	for _, inv := range []*inventory.Inventory{cutInv, inv} { // this process, and another
		_, err := inv.Adjust(ctx, restock)
		requireRebuilding(t, err)
	}
	healed, err := cutD.Heal(ctx)
	require.NoError(t, err)
	require.True(t, healed)
	st, err := cutInv.Adjust(ctx, restock)
	require.NoError(t, err)
	assert.Equal(t, [2]int64{15, 15}, [2]int64{st.OnHand, st.Available}, "the replay answers the stock with the delta, once")
	wantStock(t, inv, "sku", 15, 15, 0)
}

// cutDurables returns two Durables on one journal and one Redis, as durables does, the
// second (cutD) reaching Redis through link, both healed.
func cutDurables(t *testing.T) (rdb *redis.Client, link *testenv.Link, db *bun.DB,
	other *redisinventory.Durable, inv *inventory.Inventory, cutD *redisinventory.Durable, cutInv *inventory.Inventory) {
	t.Helper()
	db = testenv.MySQL(t)
	rdb, linked, link := testenv.LinkedRedis(t)
	other, inv, cutD, cutInv = durables(t, rdb, db, linked, db)
	_, err := cutD.Heal(context.Background())
	require.NoError(t, err)
	return rdb, link, db, other, inv, cutD, cutInv
}

// cutCommand runs op with the first Redis command through link that starts with verb and
// names key cut before it reaches Redis, and returns op's error.
func cutCommand(t *testing.T, link *testenv.Link, verb, key string, op func() error) error {
	t.Helper()
	link.Arm(func(q string) bool {
		q = strings.ToLower(q)
		return strings.HasPrefix(q, verb+" ") && strings.Contains(q, " "+key)
	}, false)
	err := op()
	cut, _ := link.Disarm()
	require.Len(t, cut, 1, "%s %s is cut", verb, key)
	return err
}
