package redisinventory_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// pipelineGate runs at the first pipeline (MULTI/EXEC transactions included) sent through
// the client once armed, or with armWhen the first whose commands match: it calls at,
// then sends the pipeline.
type pipelineGate struct {
	mu    sync.Mutex
	match func([]redis.Cmder) bool
	at    func()
}

func (g *pipelineGate) arm(at func()) { g.armWhen(nil, at) }

func (g *pipelineGate) armWhen(match func([]redis.Cmder) bool, at func()) {
	g.mu.Lock()
	g.match, g.at = match, at
	g.mu.Unlock()
}

func (g *pipelineGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *pipelineGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (g *pipelineGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		g.mu.Lock()
		at := g.at
		if at != nil && g.match != nil && !g.match(cmds) {
			at = nil
		} else {
			g.at = nil
		}
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

// TestDurableBothDown kills MySQL and Redis together (SIGKILL, no grace) while clients
// reserve, commit, release, return, adjust and sweep expiries, and brings them back in either
// order, with the healer running as in a server. Every error any call answers, in flight
// at the kill, during the outage or while the two come back, matches
// errcode.ErrUnavailable: never a business answer (out of stock, not found, a buyer's
// limit). Afterwards the journal holds every answered success, and Redis holds exactly
// what a rebuild from the journal writes: each SKU's counts, each buyer's usage and the
// live reservations with their deadlines.
func TestDurableBothDown(t *testing.T) {
	for _, mysqlFirst := range []bool{true, false} {
		t.Run(map[bool]string{true: "mysql-first", false: "redis-first"}[mysqlFirst], func(t *testing.T) {
			ctx := context.Background()
			ownDB, dsn := testenv.OwnMySQL(t)
			ownRedis := testenv.OwnRedis(t)
			rdb := redis.NewClient(&redis.Options{Addr: ownRedis.Addr})
			t.Cleanup(func() { rdb.Close() })
			db := testenv.MySQLAt(t, dsn)
			require.NoError(t, redisinventory.CreateJournal(ctx, db))
			d := testkit.Must(redisinventory.NewDurable(rdb, db))(t)
			_, err := d.Heal(ctx)
			require.NoError(t, err)
			inv := testkit.Must(inventory.New(d))(t)
			skus := []string{"a", "b"}
			setStock(t, inv, "a", 1000, 0)
			setStock(t, inv, "b", 1000, 500)
			for i := range 20 { // due while the clients run
				_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: fmt.Sprintf("due-%d", i), BuyerID: "u0",
					Lines: line(skus[i%2], 1), TTL: time.Duration(200+100*i) * time.Millisecond})
				require.NoError(t, err)
			}
			runCtx, stopRun := context.WithCancel(ctx)
			var healer sync.WaitGroup
			healer.Go(func() { _ = d.Run(runCtx, 100*time.Millisecond) })
			defer func() { stopRun(); healer.Wait() }()

			var (
				stop   atomic.Bool
				failed atomic.Int64 // calls answered ErrUnavailable
				mu     sync.Mutex
				bad    []string
				wantDB = map[string]inventory.State{} // what answered successes leave in the journal
			)
			check := func(what string, err error) bool {
				if errors.Is(err, errcode.ErrUnavailable) {
					failed.Add(1)
					time.Sleep(5 * time.Millisecond) // as a client backing off
				} else if err != nil {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s: %v", what, err))
					mu.Unlock()
				}
				return err == nil
			}
			var clients sync.WaitGroup
			for c := range 3 {
				clients.Go(func() {
					for i := 0; !stop.Load(); i++ {
						id := fmt.Sprintf("c%d-%d", c, i)
						_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: id, BuyerID: fmt.Sprintf("u%d", i%3),
							Lines: line(skus[i%2], 1+int64(i%2)), TTL: time.Hour})
						if !check("reserve "+id, err) {
							continue // maybe in the journal, maybe not: left alone
						}
						// A step answered ErrUnavailable may have committed in the journal all
						// the same (its COMMIT's reply lost with the database): its state is
						// then not known, and the reservation is left alone, as above.
						final, known := inventory.StateReserved, true
						switch i % 3 {
						case 1:
							if known = check("release "+id, inv.Release(ctx, id)); known {
								final = inventory.StateReleased
							}
						case 2:
							if known = check("commit "+id, inv.Commit(ctx, id)); known {
								final = inventory.StateCommitted
								if known = check("return "+id, inv.Return(ctx, id)); known {
									final = inventory.StateReturned
								}
							}
						}
						_, err = inv.Stock(ctx, skus[i%2])
						check("stock", err)
						_, err = inv.Adjust(ctx, inventory.Adjustment{ID: "adj-" + id, SKU: skus[i%2], Delta: int64(1 - 2*(i%2)), Reason: "count"})
						check("adjust "+id, err)
						if known {
							mu.Lock()
							wantDB[id] = final
							mu.Unlock()
						}
					}
				})
			}
			clients.Go(func() {
				for !stop.Load() {
					_, err := inv.Sweep(ctx)
					check("sweep", err)
					time.Sleep(50 * time.Millisecond)
				}
			})

			time.Sleep(300 * time.Millisecond)
			var down sync.WaitGroup
			down.Go(func() { ownDB.Stop(t, 0) })
			down.Go(func() { ownRedis.Stop(t, 0) })
			down.Wait()
			time.Sleep(time.Second)
			first, second := ownDB, ownRedis
			if !mysqlFirst {
				first, second = ownRedis, ownDB
			}
			first.Start(t)
			time.Sleep(time.Second)
			second.Start(t)
			require.Eventually(t, func() bool {
				_, err := inv.Stock(ctx, "a")
				return err == nil
			}, time.Minute, 100*time.Millisecond, "the healer rebuilds once both are back")
			time.Sleep(500 * time.Millisecond)
			stop.Store(true)
			clients.Wait()
			stopRun()
			healer.Wait()
			require.Empty(t, bad, "calls answered something other than ErrUnavailable")
			require.NotZero(t, failed.Load(), "calls met the outage")
			t.Logf("%d calls answered ErrUnavailable; %d reservations answered", failed.Load(), len(wantDB))

			_, err = d.Heal(ctx) // a heal the last changes may have asked for
			require.NoError(t, err)
			for id, state := range wantDB {
				r, err := d.Get(ctx, id)
				require.NoError(t, err)
				require.Equal(t, state, r.State, id)
			}
			snapshot := func() map[string]any {
				t.Helper()
				out := map[string]any{}
				st, err := d.Stocks(ctx, skus)
				require.NoError(t, err)
				for _, sku := range skus {
					out["stock:"+sku] = st[sku]
					usage, err := rdb.HGetAll(ctx, "{inventory}:buyers:"+sku).Result()
					require.NoError(t, err)
					out["buyers:"+sku] = usage
				}
				due, err := rdb.ZRangeWithScores(ctx, "{inventory}:due", 0, -1).Result()
				require.NoError(t, err)
				out["due"] = due
				return out
			}
			before := snapshot()
			_, err = d.Rebuild(ctx)
			require.NoError(t, err)
			require.Equal(t, snapshot(), before, "Redis holds what the journal does")
		})
	}
}

// TestDurableBehindWhileTheDatabaseFails: a release commits in the journal, and its Redis
// step is cut before it reaches Redis just as the database dies, so the request for a
// rebuild (the journal's row 'behind') cannot be recorded: it lives in the process (A)
// alone. The caller gets a 503. While A has not healed, another process (B), which never
// met the fault, does not rebuild and serves the Redis that still holds the released
// units: fewer units on sale than the journal has (a buyer refused below the limit), never
// more. Once the database is back, A's next heal rebuilds, and both see exactly the
// journal: the units on sale again, the reservation released, the buyer's usage gone.
func TestDurableBehindWhileTheDatabaseFails(t *testing.T) {
	ctx := context.Background()
	ownDB, dsn := testenv.OwnMySQL(t)
	rdb, linked, link := testenv.LinkedRedis(t)
	dbA, dbB := testenv.MySQLAt(t, dsn), testenv.MySQLAt(t, dsn)
	require.NoError(t, redisinventory.CreateJournal(ctx, dbA))
	a := testkit.Must(redisinventory.NewDurable(linked, dbA))(t)
	b := testkit.Must(redisinventory.NewDurable(rdb, dbB))(t)
	for _, d := range []*redisinventory.Durable{a, b} {
		_, err := d.Heal(ctx)
		require.NoError(t, err)
	}
	invA, invB := testkit.Must(inventory.New(a))(t), testkit.Must(inventory.New(b))(t)
	setStock(t, invB, "sku", 10, 4)
	_, err := invB.Reserve(ctx, inventory.ReserveRequest{ID: "x", BuyerID: "u", Lines: line("sku", 3), TTL: time.Hour})
	require.NoError(t, err)

	link.ArmThen(func(q string) bool {
		return strings.HasPrefix(q, "evalsha ") && strings.Contains(q, " {inventory}:res:x ")
	}, false, func() { ownDB.Stop(t, 0) })
	err = invA.Release(ctx, "x")
	cut, _ := link.Disarm()
	require.Len(t, cut, 1, "the release's Redis step is cut")
	requireRebuilding(t, err)
	ownDB.Start(t)
	require.Eventually(t, func() bool { return dbB.PingContext(ctx) == nil }, time.Minute, 100*time.Millisecond)

	healed, err := b.Heal(ctx)
	require.NoError(t, err)
	require.False(t, healed, "B knows of no request")
	wantStock(t, invB, "sku", 10, 7, 0) // the window: the released units still held in Redis
	_, err = invB.Reserve(ctx, inventory.ReserveRequest{ID: "y", BuyerID: "u", Lines: line("sku", 2), TTL: time.Hour})
	require.ErrorIs(t, err, inventory.ErrBuyerLimitExceeded, "the window: the released usage still counted")

	healed, err = a.Heal(ctx)
	require.NoError(t, err)
	require.True(t, healed, "A's request outlived the database's failure")
	for _, inv := range []*inventory.Inventory{invA, invB} {
		wantStock(t, inv, "sku", 10, 10, 0)
		r, err := inv.Get(ctx, "x")
		require.NoError(t, err)
		require.Equal(t, inventory.StateReleased, r.State)
	}
	_, err = invB.Reserve(ctx, inventory.ReserveRequest{ID: "y", BuyerID: "u", Lines: line("sku", 4), TTL: time.Hour})
	require.NoError(t, err, "the buyer holds nothing: the limit allows 4")
	wantStock(t, invB, "sku", 10, 6, 0)
}

// TestDurableRestartedWithOldDataAndProcess: Redis comes back with an older copy of its
// data under a good marker (a snapshot taken before a reservation), and the process that
// served it restarted too (a machine or a whole deployment restarting: no process saw the
// old server's run ID). The new process's first heal must still notice that Redis holds
// data written on another server run and rebuild it, and its writers must fail closed
// before that heal (one at start that failed): the old copy would put the units of the
// reservation made after the snapshot on sale again.
func TestDurableRestartedWithOldDataAndProcess(t *testing.T) {
	ctx := context.Background()
	_, _, rdb, db := backWithOldData(t)
	restarted := testkit.Must(redisinventory.NewDurable(rdb, db))(t) // the process, started again
	inv := testkit.Must(inventory.New(restarted))(t)
	// Its heal at start failed (the database was not up yet, say): the server serves, and
	// the healer tries again at its next look. Meanwhile writers fail closed.
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "early", Lines: line("a", 5), TTL: time.Hour})
	require.ErrorIs(t, err, errcode.ErrUnavailable, "5 units the old copy shows, 3 the journal has: before the first heal")
	healed, err := restarted.Heal(ctx)
	require.NoError(t, err)
	require.True(t, healed, "Redis holds data of another server run: rebuilt")
	wantStock(t, inv, "a", 5, 3, 0)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "oversell", Lines: line("a", 5), TTL: time.Hour})
	require.ErrorIs(t, err, inventory.ErrInsufficientStock, "5 units the old copy shows, 3 the journal has")
}

// TestDurableRebuildOutlivesTheDatabase: a rebuild has read the journal and wiped Redis
// when the database is killed. No reservation, in any process, succeeds against the
// Redis it leaves half-built, neither while the database is down nor once it is back
// before the rebuild's marker; the rebuild, which needs the database no more, completes;
// and then Redis holds exactly the journal: 7 units on sale of 10, and no eighth.
func TestDurableRebuildOutlivesTheDatabase(t *testing.T) {
	ctx := context.Background()
	ownDB, dsn := testenv.OwnMySQL(t)
	rdb := testenv.Redis(t)
	rdbA, gateA := gatedClient(t, rdb)
	dbA, dbB := testenv.MySQLAt(t, dsn), testenv.MySQLAt(t, dsn)
	require.NoError(t, redisinventory.CreateJournal(ctx, dbA))
	a := testkit.Must(redisinventory.NewDurable(rdbA, dbA))(t)
	b := testkit.Must(redisinventory.NewDurable(rdb, dbB))(t)
	for _, d := range []*redisinventory.Durable{a, b} {
		_, err := d.Heal(ctx)
		require.NoError(t, err)
	}
	inv := testkit.Must(inventory.New(b))(t)
	setStock(t, inv, "sku", 10, 0)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "x", Lines: line("sku", 3), TTL: time.Hour})
	require.NoError(t, err)

	reached, goOn := make(chan struct{}), make(chan struct{})
	gateA.armWhen(func(cmds []redis.Cmder) bool { // its first write, once Redis is wiped
		return slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return c.Name() == "hset" })
	}, func() { close(reached); <-goOn })
	doneA := make(chan error, 1)
	go func() {
		_, err := a.Rebuild(ctx)
		doneA <- err
	}()
	await(t, reached, "A's writes")
	reserve := func(id string, qty int64) error {
		_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: line("sku", qty), TTL: time.Hour})
		return err
	}
	ownDB.Stop(t, 0)
	require.ErrorIs(t, reserve("down", 1), errcode.ErrUnavailable)
	_, err = inv.Stock(ctx, "sku")
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	ownDB.Start(t)
	require.Eventually(t, func() bool { return dbB.PingContext(ctx) == nil }, time.Minute, 100*time.Millisecond)
	requireRebuilding(t, reserve("half-built", 1))

	close(goOn)
	require.NoError(t, <-doneA, "the rebuild needs the database no more")
	for _, d := range []*redisinventory.Durable{a, b} { // what Run does
		_, err := d.Heal(ctx)
		require.NoError(t, err)
	}
	wantStock(t, inv, "sku", 10, 7, 0)
	require.NoError(t, reserve("fits", 7))
	require.ErrorIs(t, reserve("eighth", 1), inventory.ErrInsufficientStock)
	for _, id := range []string{"down", "half-built", "eighth"} {
		_, err := b.Get(ctx, id)
		require.ErrorIs(t, err, inventory.ErrReservationNotFound, id)
	}
}

// TestDurableRebuildAfterTheJournalWasLost: a Durable's journal is lost (a new, empty
// database) while Redis keeps its data, fence included, from rebuilds of later
// generations than the new journal has. The documented way out, a Rebuild that wipes the
// old data on purpose, must succeed: a fence that only a later generation could take
// would refuse every rebuild of the new journal for ever.
func TestDurableRebuildAfterTheJournalWasLost(t *testing.T) {
	ctx := context.Background()
	d, rdb, _ := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "tee", 7, 0)
	for range 3 {
		_, err := d.Rebuild(ctx)
		require.NoError(t, err)
	}

	db := testenv.MySQL(t) // the journal, lost and created again
	require.NoError(t, redisinventory.CreateJournal(ctx, db))
	again := testkit.Must(redisinventory.NewDurable(rdb, db))(t)
	_, err := again.Heal(ctx)
	require.ErrorIs(t, err, redisinventory.ErrUnjournaledData)
	_, err = again.Rebuild(ctx)
	require.NoError(t, err, "the wipe on purpose")
	inv = testkit.Must(inventory.New(again))(t)
	_, err = inv.Stock(ctx, "tee")
	require.ErrorIs(t, err, inventory.ErrUnknownSKU, "Rebuild wipes what the journal does not hold")
	setStock(t, inv, "tee", 5, 0)
	wantStock(t, inv, "tee", 5, 5, 0)
}
