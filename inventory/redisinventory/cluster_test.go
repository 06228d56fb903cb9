package redisinventory_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/inventorytest"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// clusterHarnesses returns the conformance harnesses of the plain and the journaled
// backend on one Redis Cluster of the test's own: each inventory the suite makes has a
// hash tag of its own, so the inventories spread over the cluster's masters.
func clusterHarnesses(t *testing.T) (plain, durable inventorytest.Harness) {
	cluster := testenv.RedisCluster(t).Client
	var n atomic.Int64
	tag := func() redisinventory.Option { return redisinventory.WithTag(fmt.Sprintf("inv-%d", n.Add(1))) }
	plain = inventorytest.Harness{New: func(tb testing.TB, opts ...inventory.Option) (*inventory.Inventory, *bun.DB) {
		return testkit.Must(inventory.New(testkit.Must(redisinventory.New(cluster, tag()))(tb), opts...))(tb), nil
	}}
	durable = inventorytest.Harness{New: func(tb testing.TB, opts ...inventory.Option) (*inventory.Inventory, *bun.DB) {
		return testkit.Must(inventory.New(newClusterDurable(tb, cluster, testenv.MySQL(tb), tag()), opts...))(tb), nil
	}}
	return plain, durable
}

// newClusterDurable returns a journaled backend on cluster and db, healed.
func newClusterDurable(tb testing.TB, cluster *redis.ClusterClient, db *bun.DB, opts ...redisinventory.Option) *redisinventory.Durable {
	tb.Helper()
	ctx := context.Background()
	require.NoError(tb, redisinventory.CreateJournal(ctx, db))
	d := testkit.Must(redisinventory.NewDurable(cluster, db, opts...))(tb)
	_, err := d.Heal(ctx)
	require.NoError(tb, err)
	return d
}

// TestClusterConformance runs the conformance suite on a Redis Cluster of three masters,
// the plain backend and the journaled one: the package doc says both work on a
// *redis.ClusterClient, every key of an inventory in its hash tag's slot.
func TestClusterConformance(t *testing.T) {
	plain, durable := clusterHarnesses(t)
	t.Run("plain", func(t *testing.T) { inventorytest.Run(t, plain) })
	t.Run("durable", func(t *testing.T) { inventorytest.Run(t, durable) })
}

// TestClusterDurableLoss: on a Redis Cluster, the master holding a journaled inventory's
// slot loses its data (FLUSHALL on that node, as when it restarts empty). The inventory
// fails closed, as on one server; the heal finds that master (the slot's, not a node of the
// client's choosing), rebuilds there from the journal, and the stock and reservations are
// back exactly. Inventories of other tags, on the other masters, are untouched throughout.
func TestClusterDurableLoss(t *testing.T) {
	ctx := context.Background()
	cl := testenv.RedisCluster(t)
	cluster := cl.Client
	db := testenv.MySQL(t)
	// Tags whose slots lie on different masters: the lost one and a bystander elsewhere.
	lost, other := "", ""
	masters := map[string]string{}
	for i := 0; lost == "" || other == ""; i++ {
		tag := fmt.Sprintf("t%d", i)
		node, err := cluster.MasterForKey(ctx, "{"+tag+"}")
		require.NoError(t, err)
		addr := node.Options().Addr
		switch {
		case lost == "":
			lost, masters[tag] = tag, addr
		case addr != masters[lost]:
			other, masters[tag] = tag, addr
		}
	}
	d := newClusterDurable(t, cluster, db, redisinventory.WithTag(lost))
	inv := testkit.Must(inventory.New(d))(t)
	bystander := testkit.Must(inventory.New(testkit.Must(redisinventory.New(cluster, redisinventory.WithTag(other)))(t)))(t)
	setStock(t, inv, "drop", 10, 2)
	setStock(t, bystander, "drop", 5, 0)
	for _, id := range []string{"paid", "live"} {
		_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: line("drop", 1), BuyerID: "u-" + id, TTL: time.Hour})
		require.NoError(t, err)
	}
	require.NoError(t, inv.Commit(ctx, "paid"))
	wantStock(t, inv, "drop", 9, 8, 1)

	node, err := cluster.MasterForKey(ctx, "{"+lost+"}")
	require.NoError(t, err)
	require.NoError(t, node.FlushAll(ctx).Err())
	_, err = inv.Stock(ctx, "drop")
	requireRebuilding(t, err)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "new", Lines: line("drop", 1), BuyerID: "u-new"})
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	wantStock(t, bystander, "drop", 5, 5, 0)

	healed, err := d.Heal(ctx)
	require.NoError(t, err)
	require.True(t, healed)
	wantStock(t, inv, "drop", 9, 8, 1)
	require.NoError(t, inv.Commit(ctx, "live"))
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "greedy", Lines: line("drop", 2), BuyerID: "u-live"})
	require.ErrorIs(t, err, inventory.ErrBuyerLimitExceeded, "the buyers' usage was rebuilt too")
	wantStock(t, inv, "drop", 8, 8, 2)
	wantStock(t, bystander, "drop", 5, 5, 0)
	healed, err = d.Heal(ctx)
	require.NoError(t, err)
	assert.False(t, healed, "a healthy Redis is left alone")

	// The master restarts empty (a new run ID, its slots kept): the same, through the
	// cluster client's broken connections and its slot map.
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "before-restart", Lines: line("drop", 1), BuyerID: "u-r", TTL: time.Hour})
	require.NoError(t, err)
	cl.RestartEmpty(t, masters[lost])
	for i := 0; ; i++ { // the first answers may be the broken connections' errors
		_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "new", Lines: line("drop", 1), BuyerID: "u-new"})
		require.ErrorIs(t, err, errcode.ErrUnavailable)
		if u := (*errcode.UnavailableError)(nil); errors.As(err, &u) && u.Dependency == redisinventory.DependencyRebuilding {
			break
		}
		require.Less(t, i, 20, "the reservations fail closed as rebuilding once the client has reconnected: %v", err)
	}
	healed, err = d.Heal(ctx)
	require.NoError(t, err)
	require.True(t, healed)
	wantStock(t, inv, "drop", 8, 7, 2)
	require.NoError(t, inv.Commit(ctx, "before-restart"))
	wantStock(t, inv, "drop", 7, 7, 3)
	wantStock(t, bystander, "drop", 5, 5, 0)
}
