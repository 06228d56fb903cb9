package redisinventory_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// pipelineGate runs at the first pipeline (MULTI/EXEC transactions included) sent through
// the client once armed: it calls at, then sends the pipeline.
type pipelineGate struct {
	mu sync.Mutex
	at func()
}

func (g *pipelineGate) arm(at func()) { g.mu.Lock(); g.at = at; g.mu.Unlock() }

func (g *pipelineGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *pipelineGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (g *pipelineGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		g.mu.Lock()
		at := g.at
		g.at = nil
		g.mu.Unlock()
		if at != nil {
			at()
		}
		return next(ctx, cmds)
	}
}

// gatedClient is a client of its own on rdb's database, with a pipelineGate.
func gatedClient(t *testing.T, rdb *redis.Client) (*redis.Client, *pipelineGate) {
	t.Helper()
	opts := *rdb.Options()
	c := redis.NewClient(&opts)
	t.Cleanup(func() { c.Close() })
	g := &pipelineGate{}
	c.AddHook(g)
	return c, g
}

// TestDurableRebuildWhoseLockDied: a rebuild (process A) has read the journal, with a
// reservation of buyer "b" live, and wiped Redis; then the database drops A's connections,
// the one holding the rebuild lock among them, while A goes on writing Redis from what it
// read. The reservation is released meanwhile (its Redis step finds no marker and asks for
// a rebuild), and another process (B), whose traffic met the missing marker, takes the
// free lock and rebuilds too. A's writes, from its older read, reach Redis between B's
// wipe and B's own writes. Whatever A's rebuild answers, once B's is done Redis must hold
// the journal: the buyer may reserve up to the limit again (no usage left of the released
// reservation), and the sweep past the deadlines frees no unit twice (on hand 10, never
// 13 on sale).
func TestDurableRebuildWhoseLockDied(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.MySQLDSN(t)
	rdb := testenv.Redis(t)
	dbA, dbB, killer := testenv.MySQLAt(t, dsn), testenv.MySQLAt(t, dsn), testenv.MySQLAt(t, dsn)
	require.NoError(t, redisinventory.CreateJournal(ctx, dbA))
	rdbA, gateA := gatedClient(t, rdb)
	rdbB, gateB := gatedClient(t, rdb)
	a := testkit.Must(redisinventory.NewDurable(rdbA, dbA))(t)
	b := testkit.Must(redisinventory.NewDurable(rdbB, dbB))(t)
	for _, d := range []*redisinventory.Durable{a, b} {
		_, err := d.Heal(ctx)
		require.NoError(t, err)
	}
	inv := testkit.Must(inventory.New(b))(t)
	setStock(t, inv, "sku", 10, 5)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "x", BuyerID: "b", Lines: line("sku", 3), TTL: time.Hour})
	require.NoError(t, err)

	// A stops at its first write of Redis: it has read the journal and wiped Redis.
	reached, goOn := make(chan struct{}), make(chan struct{})
	gateA.arm(func() { close(reached); <-goOn })
	doneA := make(chan error, 1)
	go func() {
		_, err := a.Rebuild(ctx)
		doneA <- err
	}()
	await(t, reached, "A's writes")
	testenv.KillConnections(t, killer) // A's rebuild lock is gone with its connection

	if err := inv.Release(ctx, "x"); err != nil {
		requireRebuilding(t, err)
	}

	// B's writes wait until A's, from its older read, have reached Redis.
	gateB.arm(func() {
		close(goOn)
		<-doneA // A's answer does not matter: only what Redis ends up holding
	})
	_, err = b.Rebuild(ctx)
	require.NoError(t, err)
	for _, d := range []*redisinventory.Durable{a, b} { // what Run does
		_, err := d.Heal(ctx)
		require.NoError(t, err)
	}

	wantStock(t, inv, "sku", 10, 10, 0)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "y", BuyerID: "b", Lines: line("sku", 5), TTL: time.Hour})
	require.NoError(t, err, "the buyer holds nothing: the limit allows 5")
	wantStock(t, inv, "sku", 10, 5, 0)
	n, err := b.Expire(ctx, time.Now().Add(2*time.Hour), 100)
	require.NoError(t, err)
	require.Equal(t, 1, n, "y expires")
	wantStock(t, inv, "sku", 10, 10, 0)
}
