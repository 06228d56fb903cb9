package redisinventory_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// scanGate holds the first SCAN sent through the client once armed, until opened: the
// rebuild's wipe, which comes after its read of the journal and before it writes Redis
// and the marker. It holds nothing else. Once the SCAN is held, answered is closed when
// the first script call made meanwhile has its answer.
type scanGate struct {
	mu       sync.Mutex
	armed    bool
	held     bool
	reached  chan struct{}
	open     chan struct{}
	answered chan struct{}
}

func newScanGate() *scanGate {
	return &scanGate{reached: make(chan struct{}), open: make(chan struct{}), answered: make(chan struct{})}
}

func (g *scanGate) arm() { g.mu.Lock(); g.armed = true; g.mu.Unlock() }

func (g *scanGate) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (g *scanGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch cmd.Name() {
		case "scan":
			g.mu.Lock()
			hold := g.armed
			g.armed, g.held = false, g.held || hold
			g.mu.Unlock()
			if hold {
				close(g.reached)
				<-g.open
			}
		case "evalsha", "eval":
			err := next(ctx, cmd)
			g.mu.Lock()
			if g.held {
				g.held = false
				close(g.answered)
			}
			g.mu.Unlock()
			return err
		}
		return next(ctx, cmd)
	}
}

func (g *scanGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// rebuildHeldAfterItsRead starts a rebuild of d and returns once it has read the journal
// and not yet written Redis (its marker is gone); finish lets it go on and waits for it.
// answered is closed when the first script call made while the rebuild is held has its
// answer.
func rebuildHeldAfterItsRead(t *testing.T, d *redisinventory.Durable, rdb *redis.Client) (finish func(), answered <-chan struct{}) {
	t.Helper()
	g := newScanGate()
	rdb.AddHook(g)
	g.arm()
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(g.open) }) })
	done := make(chan error, 1)
	go func() {
		_, err := d.Rebuild(context.Background())
		done <- err
	}()
	<-g.reached
	return func() {
		once.Do(func() { close(g.open) })
		require.NoError(t, <-done)
	}, g.answered
}

// TestDurableReturnDuringRebuild: a Return whose journal row commits after a rebuild read
// the journal, and whose Redis step found the marker gone (the rebuild had not written it
// yet), is answered as a success; the rebuild then writes Redis from what it read, with
// the reservation still sold. The healer, woken, must bring Redis to the journal: the
// units are on sale again and no longer sold.
func TestDurableReturnDuringRebuild(t *testing.T) {
	ctx := context.Background()
	d, inv, rdb := orderOne(t, true)
	wantStock(t, inv, "mug", 3, 3, 2)

	finish, answered := rebuildHeldAfterItsRead(t, d, rdb)
	returned := make(chan error, 1)
	go func() { returned <- inv.Return(ctx, "order-1") }()
	<-answered // the Return's Redis step met the rebuild: the marker is gone
	finish()
	require.NoError(t, <-returned)

	// What Run does when an operation woke it. A rebuild for every change made while one
	// ran would rebuild for ever under steady traffic (the sweeper's expiries alone).
	healed, err := d.Heal(ctx)
	require.NoError(t, err)
	require.False(t, healed, "the Return needs no second rebuild")
	r, err := inv.Get(ctx, "order-1")
	require.NoError(t, err)
	require.Equal(t, inventory.StateReturned, r.State)
	wantStock(t, inv, "mug", 5, 5, 0)
}

// TestDurableRestockDuringRebuild: a positive Adjust commits in the journal after a
// rebuild read it and its Redis step meets the rebuild (the marker is gone). Whatever its
// caller is answered (a 503 asks for a retry, which is a replay that changes nothing in
// Redis), once the rebuild and the heal it may have asked for are done, Redis must hold
// what the journal holds, restock included.
func TestDurableRestockDuringRebuild(t *testing.T) {
	ctx := context.Background()
	d, rdb, _ := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "mug", 5, 0)

	finish, answered := rebuildHeldAfterItsRead(t, d, rdb)
	adjusted := make(chan error, 1)
	go func() {
		_, err := inv.Adjust(ctx, inventory.Adjustment{ID: "restock-1", SKU: "mug", Delta: 4, Reason: "restock"})
		adjusted <- err
	}()
	<-answered // the Adjust's Redis step met the rebuild: the marker is gone
	finish()
	if err := <-adjusted; err != nil {
		requireRebuilding(t, err)
	}

	_, err := d.Heal(ctx) // what Run does when an operation woke it
	require.NoError(t, err)
	_, err = inv.Adjust(ctx, inventory.Adjustment{ID: "restock-1", SKU: "mug", Delta: 4, Reason: "restock"})
	require.NoError(t, err)
	wantStock(t, inv, "mug", 9, 9, 0)
}

// TestDurableReturnCancelledAfterItsJournalCommit: a Return of a reservation Redis holds
// no record of (committed before a rebuild, which writes only live ones; or committed
// longer ago than the retention) commits in the journal, and its caller gives up before
// the Redis step. The retry is a replay: it must still leave Redis as the journal says,
// the units on sale again and no longer sold.
func TestDurableReturnCancelledAfterItsJournalCommit(t *testing.T) {
	ctx := context.Background()
	d, inv, rdb := orderOne(t, true)
	_, err := d.Rebuild(ctx)
	require.NoError(t, err)
	wantStock(t, inv, "mug", 3, 3, 2)

	callerCtx, giveUp := context.WithCancel(ctx)
	defer giveUp()
	var armed atomic.Bool
	rdb.AddHook(ctxGate{armed: &armed})
	redisinventory.SetHook(d, func(op, id string) {
		if op == "return" {
			giveUp() // the journal has committed the return; Redis has not followed yet
			armed.Store(true)
		}
	})
	_ = inv.Return(callerCtx, "order-1") // whatever it answers, the caller retries
	redisinventory.SetHook(d, nil)
	armed.Store(false)
	require.NoError(t, inv.Return(ctx, "order-1"))

	r, err := inv.Get(ctx, "order-1")
	require.NoError(t, err)
	require.Equal(t, inventory.StateReturned, r.State)
	wantStock(t, inv, "mug", 5, 5, 0)
}

// ctxGate makes the next script call, once armed, wait for its context to end (when it
// can end): the call then fails as it does when its caller gave up before Redis answered.
type ctxGate struct{ armed *atomic.Bool }

func (g ctxGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g ctxGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if (cmd.Name() == "evalsha" || cmd.Name() == "eval") && g.armed.CompareAndSwap(true, false) {
			if done := ctx.Done(); done != nil {
				<-done
			}
		}
		return next(ctx, cmd)
	}
}

func (g ctxGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestDurableReturnRedisStepCut: a Return of a reservation Redis holds no record of
// (committed before a rebuild, which writes only live ones) commits in the journal, and
// its Redis step is cut before the script reaches Redis. Its caller gets a 503; the retry
// is a replay, which assumes Redis returned the units already. The heal the failure asks
// for, and the retry, must leave Redis as the journal says: the units on sale again and
// no longer sold.
func TestDurableReturnRedisStepCut(t *testing.T) {
	ctx := context.Background()
	db := testenv.MySQL(t)
	rdb, linked, link := testenv.LinkedRedis(t)
	d, inv, cutD, cutInv := durables(t, rdb, db, linked, db)
	healed, err := cutD.Heal(ctx)
	require.NoError(t, err)
	require.False(t, healed, "Redis holds the journal's generation")
	setStock(t, inv, "mug", 5, 0)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "order-1", Lines: line("mug", 2), TTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, inv.Commit(ctx, "order-1"))
	_, err = d.Rebuild(ctx)
	require.NoError(t, err)
	wantStock(t, inv, "mug", 3, 3, 2)

	link.Arm(func(q string) bool {
		q = strings.ToLower(q)
		return strings.HasPrefix(q, "evalsha ") && strings.Contains(q, " {inventory}:res:order-1 ")
	}, false)
	err = cutInv.Return(ctx, "order-1")
	cut, _ := link.Disarm()
	require.Len(t, cut, 1, "the Return's Redis step was cut")
	require.ErrorIs(t, err, errcode.ErrUnavailable)

	_, err = cutD.Heal(ctx) // what Run does when the failure woke it
	require.NoError(t, err)
	require.NoError(t, cutInv.Return(ctx, "order-1"))
	r, err := inv.Get(ctx, "order-1")
	require.NoError(t, err)
	require.Equal(t, inventory.StateReturned, r.State)
	wantStock(t, inv, "mug", 5, 5, 0)
}

// TestDurableUsageKeyLost: Redis loses one SKU's buyer usage (evicted under memory
// pressure, or missing from a partial restore) while its stock key stays. The per-buyer
// limit must still hold: a buyer who holds the limit already is refused, or the call fails
// closed while Redis is rebuilt; it is never granted more.
func TestDurableUsageKeyLost(t *testing.T) {
	ctx := context.Background()
	d, rdb, _ := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "drop", 10, 1)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "first", Lines: line("drop", 1), BuyerID: "u1", TTL: time.Hour})
	require.NoError(t, err)

	require.NoError(t, rdb.Del(ctx, "{inventory}:buyers:drop").Err())
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "second", Lines: line("drop", 1), BuyerID: "u1", TTL: time.Hour})
	if err != nil && errors.Is(err, errcode.ErrUnavailable) {
		_, herr := d.Heal(ctx) // what Run does when the failure woke it
		require.NoError(t, herr)
		_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "second", Lines: line("drop", 1), BuyerID: "u1", TTL: time.Hour})
	}
	require.ErrorIs(t, err, inventory.ErrBuyerLimitExceeded, "u1 holds its one unit already")
	wantStock(t, inv, "drop", 10, 9, 0)
}

// scriptAnswered closes answered when the first script call through the client, once
// armed, has its answer.
type scriptAnswered struct {
	armed    *atomic.Bool
	answered chan struct{}
}

func (g scriptAnswered) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g scriptAnswered) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if (cmd.Name() == "evalsha" || cmd.Name() == "eval") && g.armed.CompareAndSwap(true, false) {
			close(g.answered)
		}
		return err
	}
}

func (g scriptAnswered) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestDurableReturnDuringAnotherProcessRebuild: two processes share the journal and Redis.
// One rebuilds; the other's Return commits in the journal after that rebuild's read, and
// its Redis step meets the rebuild. Once the rebuild is done, Redis must hold the return,
// and the second process must not rebuild again: a rebuild in one process for every change
// another made while it rebuilt would have the processes rebuild in turn for as long as
// traffic lasts.
func TestDurableReturnDuringAnotherProcessRebuild(t *testing.T) {
	ctx := context.Background()
	d1, rdb, db := newDurable(t)
	rdb2 := redis.NewClient(rdb.Options())
	t.Cleanup(func() { rdb2.Close() })
	var armed atomic.Bool
	answered := make(chan struct{})
	rdb2.AddHook(scriptAnswered{armed: &armed, answered: answered})
	d2 := testkit.Must(redisinventory.NewDurable(rdb2, db))(t)
	_, err := d2.Heal(ctx)
	require.NoError(t, err)
	inv1, inv2 := testkit.Must(inventory.New(d1))(t), testkit.Must(inventory.New(d2))(t)
	setStock(t, inv1, "mug", 5, 0)
	_, err = inv1.Reserve(ctx, inventory.ReserveRequest{ID: "order-1", Lines: line("mug", 2), TTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, inv1.Commit(ctx, "order-1"))
	wantStock(t, inv1, "mug", 3, 3, 2)

	finish, _ := rebuildHeldAfterItsRead(t, d1, rdb)
	armed.Store(true)
	returned := make(chan error, 1)
	go func() { returned <- inv2.Return(ctx, "order-1") }()
	<-answered // the Return's Redis step met the rebuild: the marker is gone
	finish()
	require.NoError(t, <-returned)

	healed, err := d2.Heal(ctx) // what Run does when an operation woke it
	require.NoError(t, err)
	require.False(t, healed, "the second process does not rebuild again")
	wantStock(t, inv1, "mug", 5, 5, 0)
	wantStock(t, inv2, "mug", 5, 5, 0)
}

// TestDurableReturnBeforeRebuildNeedsNoSecondRebuild: a Return commits in the journal
// before a rebuild bumps the generation (the bump waits for every writer holding the old
// one, so this is what every release, expiry and return in flight at a rebuild does), and
// its Redis step runs once the rebuild is under way or done: the guard refuses it, rightly,
// since the rebuild read the journal with the return in it. That refusal must not ask for
// another rebuild: under steady traffic a change in flight meets every rebuild, and each
// rebuild would ask for the next one for as long as traffic lasts.
func TestDurableReturnBeforeRebuildNeedsNoSecondRebuild(t *testing.T) {
	ctx := context.Background()
	d, inv, _ := orderOne(t, true)
	wantStock(t, inv, "mug", 3, 3, 2)

	var rebuilt rebuildOnce
	redisinventory.SetHook(d, func(op, id string) {
		if op == "return" {
			// The journal has committed the return; Redis has not followed yet. A rebuild
			// starts now (Run's, woken by anything) and reads the journal with it.
			rebuilt.Do(t, d)
		}
	})
	require.NoError(t, inv.Return(ctx, "order-1"))
	redisinventory.SetHook(d, nil)
	require.True(t, rebuilt.done)

	healed, err := d.Heal(ctx) // what Run does when an operation woke it
	require.NoError(t, err)
	require.False(t, healed, "the rebuild read the return: no second rebuild")
	wantStock(t, inv, "mug", 5, 5, 0)
}

// rebuildOnce rebuilds a Durable the first time Do is called.
type rebuildOnce struct{ done bool }

// Do rebuilds d unless it did already.
func (o *rebuildOnce) Do(t *testing.T, d *redisinventory.Durable) {
	if o.done {
		return
	}
	o.done = true
	_, err := d.Rebuild(context.Background())
	require.NoError(t, err)
}

// TestDurableReturnWhoseWaitForTheRebuildFails: a Return commits in the journal after a
// rebuild of its own process read the journal, and its Redis step meets that rebuild (the
// marker is gone). Its wait for the rebuild fails (here its rebuild wait, 100 ms, runs out
// while the rebuild is held; in production a rebuild longer than the wait, or a dropped
// connection): the step never runs again, and the rebuild did not read the return. Whatever the Return answers, once the
// rebuild and the heal it may have asked for are done, Redis must hold the return.
func TestDurableReturnWhoseWaitForTheRebuildFails(t *testing.T) {
	ctx := context.Background()
	cfg, err := mysql.ParseDSN(testenv.MySQLDSN(t))
	require.NoError(t, err)
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["innodb_lock_wait_timeout"] = "1"
	db, rdb := testenv.MySQLAt(t, cfg.FormatDSN()), testenv.Redis(t)
	require.NoError(t, redisinventory.CreateJournal(ctx, db))
	d := testkit.Must(redisinventory.NewDurable(rdb, db, redisinventory.WithRebuildWait(100*time.Millisecond)))(t)
	_, err = d.Heal(ctx)
	require.NoError(t, err)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "mug", 5, 0)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "order-1", Lines: line("mug", 2), TTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, inv.Commit(ctx, "order-1"))
	wantStock(t, inv, "mug", 3, 3, 2)

	finish, _ := rebuildHeldAfterItsRead(t, d, rdb)
	returned := inv.Return(ctx, "order-1") // its wait for the held rebuild runs out
	finish()
	_, err = d.Heal(ctx) // what Run does when an operation woke it
	require.NoError(t, err)
	if returned != nil {
		require.ErrorIs(t, returned, errcode.ErrUnavailable)
		require.NoError(t, inv.Return(ctx, "order-1"))
	}
	r, err := inv.Get(ctx, "order-1")
	require.NoError(t, err)
	require.Equal(t, inventory.StateReturned, r.State)
	wantStock(t, inv, "mug", 5, 5, 0)
}

// TestDurableReserveDuringAnotherProcessRebuild: two processes share the journal and
// Redis. One rebuilds; the other's Reserve meets the rebuild (the marker is gone) and
// fails closed, as it should. Once the rebuild is done, Redis holds the journal's
// generation, and the second process must not rebuild again: otherwise its rebuild fails
// the first process's reservations closed, which then rebuilds in turn, and two servers
// under steady traffic rebuild each other for as long as it lasts.
func TestDurableReserveDuringAnotherProcessRebuild(t *testing.T) {
	ctx := context.Background()
	d1, rdb, db := newDurable(t)
	rdb2 := redis.NewClient(rdb.Options())
	t.Cleanup(func() { rdb2.Close() })
	d2 := testkit.Must(redisinventory.NewDurable(rdb2, db))(t)
	_, err := d2.Heal(ctx)
	require.NoError(t, err)
	inv1, inv2 := testkit.Must(inventory.New(d1))(t), testkit.Must(inventory.New(d2))(t)
	setStock(t, inv1, "mug", 5, 0)

	finish, _ := rebuildHeldAfterItsRead(t, d1, rdb)
	_, err = inv2.Reserve(ctx, inventory.ReserveRequest{ID: "order-1", Lines: line("mug", 2), TTL: time.Hour})
	requireRebuilding(t, err)
	finish()

	healed, err := d2.Heal(ctx) // what Run does when the failure woke it
	require.NoError(t, err)
	require.False(t, healed, "the first process's rebuild is done: the second does not rebuild again")
	_, err = inv2.Reserve(ctx, inventory.ReserveRequest{ID: "order-1", Lines: line("mug", 2), TTL: time.Hour})
	require.NoError(t, err)
	wantStock(t, inv1, "mug", 5, 3, 0)
}

// TestDurableReleaseBeforeSetStock: a Release commits in the journal, and before its Redis
// step runs a SetStock (of another SKU) moves the generation and Redis's marker on, with
// Redis still holding the units reserved. The guard refuses the step, and no rebuild read
// the release: once the heal the step asks for is done, Redis must hold the release.
func TestDurableReleaseBeforeSetStock(t *testing.T) {
	ctx := context.Background()
	d, inv, _ := orderOne(t, false)
	wantStock(t, inv, "mug", 5, 3, 0)

	var once bool
	redisinventory.SetHook(d, func(op, id string) {
		if op == "release" && !once {
			once = true
			setStock(t, inv, "cup", 7, 0)
		}
	})
	require.NoError(t, inv.Release(ctx, "order-1"))
	redisinventory.SetHook(d, nil)
	require.True(t, once)

	_, err := d.Heal(ctx) // what Run does when the step woke it
	require.NoError(t, err)
	wantStock(t, inv, "mug", 5, 5, 0)
	wantStock(t, inv, "cup", 7, 7, 0)
}

// TestDurableReleaseBeforeSetStockNeedsNoRebuild: a Release commits in the journal, and
// before its Redis step runs a SetStock of another SKU moves the generation and Redis's
// marker on. No rebuild ran: Redis is what it was plus the setting, with the reservation
// still reserved, so the step can still be applied. A full rebuild (every SKU fails closed
// meanwhile) for every release that meets a SetStock would rebuild over and over while
// stock is set in bulk during a sale.
func TestDurableReleaseBeforeSetStockNeedsNoRebuild(t *testing.T) {
	ctx := context.Background()
	d, inv, _ := orderOne(t, false)

	var once bool
	redisinventory.SetHook(d, func(op, id string) {
		if op == "release" && !once {
			once = true
			setStock(t, inv, "cup", 7, 0)
		}
	})
	require.NoError(t, inv.Release(ctx, "order-1"))
	redisinventory.SetHook(d, nil)
	require.True(t, once)

	healed, err := d.Heal(ctx) // what Run does when an operation woke it
	require.NoError(t, err)
	require.False(t, healed, "no rebuild for a release that met a SetStock")
	wantStock(t, inv, "mug", 5, 5, 0)
	wantStock(t, inv, "cup", 7, 7, 0)
}

// orderOne returns a Durable on a fresh journal and Redis, and its Inventory, with 5 mugs
// on hand and 2 of them reserved by "order-1", committed when sold.
func orderOne(t *testing.T, sold bool) (*redisinventory.Durable, *inventory.Inventory, *redis.Client) {
	t.Helper()
	d, rdb, _ := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "mug", 5, 0)
	_, err := inv.Reserve(context.Background(), inventory.ReserveRequest{ID: "order-1", Lines: line("mug", 2), TTL: time.Hour})
	require.NoError(t, err)
	if sold {
		require.NoError(t, inv.Commit(context.Background(), "order-1"))
	}
	return d, inv, rdb
}
