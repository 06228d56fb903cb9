package redisinventory_test

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// The tests of this file hold the rebuild lock (as a rebuild of a large catalogue does)
// while a change whose Redis step the guard refused waits for it. Their connections wait
// up to 120 s for a row lock, far longer than the tests do: a change that waits for the
// lock itself, rather than for a bounded time, shows as a test still waiting after
// watchdog, which is no bound on how fast anything must be, only a deadlock detector.
const watchdog = 30 * time.Second

// longLockWaitDSN is a DSN of a fresh database whose connections wait 120 s for a row lock.
func longLockWaitDSN(t *testing.T) string {
	t.Helper()
	cfg, err := mysql.ParseDSN(testenv.MySQLDSN(t))
	require.NoError(t, err)
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["innodb_lock_wait_timeout"] = "120"
	return cfg.FormatDSN()
}

// durableAt returns a Durable on the journal at dsn and a Redis database of the test's
// own, healed, with its Inventory, Redis and database.
func durableAt(t *testing.T, dsn string, opts ...redisinventory.Option) (*redisinventory.Durable, *inventory.Inventory, *redis.Client, *bun.DB) {
	t.Helper()
	ctx := context.Background()
	db, rdb := testenv.MySQLAt(t, dsn), testenv.Redis(t)
	require.NoError(t, redisinventory.CreateJournal(ctx, db))
	d := testkit.Must(redisinventory.NewDurable(rdb, db, opts...))(t)
	_, err := d.Heal(ctx)
	require.NoError(t, err)
	return d, testkit.Must(inventory.New(d))(t), rdb, db
}

// holdRebuildLock takes the rebuild lock in a transaction of a connection pool of its own
// (another process, say, rebuilding a large catalogue) and returns the transaction, rolled
// back when the test ends if it is still open.
func holdRebuildLock(t *testing.T, dsn string) bun.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := testenv.MySQLAt(t, dsn).BeginTx(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback() })
	var n int64
	require.NoError(t, tx.QueryRowContext(ctx, `SELECT gen FROM inventory_journal_generation WHERE name = 'rebuild' FOR UPDATE`).Scan(&n))
	return tx
}

// await returns what ch delivers, failing the test when it delivers nothing for watchdog.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(watchdog):
		t.Fatalf("%s: nothing after %v: waiting on the rebuild lock", what, watchdog)
	}
	var zero T
	return zero
}

// requireRetryLater requires err to be the 503 of a change whose Redis step waits for a
// rebuild: errcode.ErrUnavailable with DependencyRebuilding's Retry-After.
func requireRetryLater(t *testing.T, err error) {
	t.Helper()
	requireRebuilding(t, err)
	require.Equal(t, redisinventory.RebuildRetryAfter, errcode.RetryAfter(err, 0))
}

// stillHeld requires tx, which holds the rebuild lock, to be open still.
func stillHeld(t *testing.T, tx bun.Tx) {
	t.Helper()
	var one int
	require.NoError(t, tx.QueryRowContext(context.Background(), `SELECT 1`).Scan(&one), "the rebuild lock is still held")
}

// TestDurableChangesBehindALongRebuildFailFast: a Return and a positive Adjust commit in
// the journal while another process holds the rebuild lock (a rebuild of a large
// catalogue, which dropped the marker), and the guard refuses their Redis steps. They must
// not wait for the lock as long as the database would let them (tens of seconds, holding a
// connection each): once the Durable's rebuild wait has passed, with the lock still held,
// each answers 503 with a Retry-After. Their changes are in the journal, and no rebuild
// read them: the heal that follows must rebuild Redis with each of them applied exactly
// once, and the callers' retries (replays) must change nothing more.
func TestDurableChangesBehindALongRebuildFailFast(t *testing.T) {
	ctx := context.Background()
	dsn := longLockWaitDSN(t)
	d, inv, rdb, _ := durableAt(t, dsn, redisinventory.WithRebuildWait(100*time.Millisecond))
	setStock(t, inv, "mug", 5, 0)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "order-1", Lines: line("mug", 2), TTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, inv.Commit(ctx, "order-1"))
	wantStock(t, inv, "mug", 3, 3, 2)

	lock := holdRebuildLock(t, dsn)
	require.NoError(t, rdb.Del(ctx, "{inventory}:generation").Err()) // the rebuild dropped the marker
	returned, adjusted := make(chan error, 1), make(chan error, 1)
	restock := inventory.Adjustment{ID: "restock-1", SKU: "mug", Delta: 4, Reason: "restock"}
	go func() { returned <- inv.Return(ctx, "order-1") }()
	go func() {
		_, err := inv.Adjust(ctx, restock)
		adjusted <- err
	}()
	requireRetryLater(t, await(t, returned, "the Return"))
	requireRetryLater(t, await(t, adjusted, "the Adjust"))
	stillHeld(t, lock)
	require.NoError(t, lock.Rollback()) // the long rebuild ends

	healed, err := d.Heal(ctx) // what Run does when the failures woke it
	require.NoError(t, err)
	require.True(t, healed)
	r, err := inv.Get(ctx, "order-1")
	require.NoError(t, err)
	require.Equal(t, inventory.StateReturned, r.State)
	wantStock(t, inv, "mug", 9, 9, 0)

	require.NoError(t, inv.Return(ctx, "order-1"))
	_, err = inv.Adjust(ctx, restock)
	require.NoError(t, err)
	wantStock(t, inv, "mug", 9, 9, 0)
	healed, err = d.Heal(ctx)
	require.NoError(t, err)
	require.False(t, healed, "nothing left to rebuild")
}

// TestDurableChangeBehindARebuildThatMissedIt: two processes share the journal and Redis.
// One rebuilds, slowly: it has read the journal and holds the rebuild lock while it writes
// Redis. The other's Return commits after that read, and its Redis step meets the rebuild
// (the marker is gone). The Return gives up waiting once its rebuild wait has passed and
// answers 503. The rebuild then ends with Redis at the journal's generation but without
// the return: the second process's heal must rebuild all the same (a heal that trusts the
// marker would leave the units sold for ever), and the stock must end returned, once.
func TestDurableChangeBehindARebuildThatMissedIt(t *testing.T) {
	ctx := context.Background()
	dsn := longLockWaitDSN(t)
	d1, inv1, rdb, db := durableAt(t, dsn)
	rdb2 := redis.NewClient(rdb.Options())
	t.Cleanup(func() { rdb2.Close() })
	d2 := testkit.Must(redisinventory.NewDurable(rdb2, db, redisinventory.WithRebuildWait(100*time.Millisecond)))(t)
	_, err := d2.Heal(ctx)
	require.NoError(t, err)
	inv2 := testkit.Must(inventory.New(d2))(t)
	setStock(t, inv1, "mug", 5, 0)
	_, err = inv1.Reserve(ctx, inventory.ReserveRequest{ID: "order-1", Lines: line("mug", 2), TTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, inv1.Commit(ctx, "order-1"))

	finish, _ := rebuildHeldAfterItsRead(t, d1, rdb)
	returned := make(chan error, 1)
	go func() { returned <- inv2.Return(ctx, "order-1") }()
	requireRetryLater(t, await(t, returned, "the Return"))
	finish()
	journal, redisGen, err := d2.Generation(ctx)
	require.NoError(t, err)
	require.Equal(t, journal, redisGen, "the slow rebuild wrote the marker, without the return")

	healed, err := d2.Heal(ctx) // what Run does when the failure woke it
	require.NoError(t, err)
	require.True(t, healed, "the return no rebuild read asks for one")
	require.NoError(t, inv2.Return(ctx, "order-1")) // the caller's retry: a replay
	r, err := inv1.Get(ctx, "order-1")
	require.NoError(t, err)
	require.Equal(t, inventory.StateReturned, r.State)
	wantStock(t, inv1, "mug", 5, 5, 0)
	wantStock(t, inv2, "mug", 5, 5, 0)
}

// TestDurableChangeReadByAHeldRebuildNeedsNoWait: a Return commits in the journal, and
// then a rebuild starts, reads the journal with it, and holds the rebuild lock while it
// writes Redis (slowly). The Return's Redis step meets it. Once its rebuild wait has
// passed, the Return knows the rebuild read it (the row 'built' is past its generation):
// it succeeds without waiting for the lock and asks for no second rebuild, and the
// rebuild, once done, leaves the units returned, once.
func TestDurableChangeReadByAHeldRebuildNeedsNoWait(t *testing.T) {
	ctx := context.Background()
	dsn := longLockWaitDSN(t)
	d, inv, rdb, _ := durableAt(t, dsn, redisinventory.WithRebuildWait(100*time.Millisecond))
	setStock(t, inv, "mug", 5, 0)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "order-1", Lines: line("mug", 2), TTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, inv.Commit(ctx, "order-1"))

	var finish func()
	redisinventory.SetHook(d, func(op, id string) {
		if op == "return" && finish == nil {
			// The journal has committed the return; Redis has not followed yet.
			finish, _ = rebuildHeldAfterItsRead(t, d, rdb)
		}
	})
	returned := make(chan error, 1)
	go func() { returned <- inv.Return(ctx, "order-1") }()
	require.NoError(t, await(t, returned, "the Return"))
	redisinventory.SetHook(d, nil)
	require.NotNil(t, finish)
	finish()

	healed, err := d.Heal(ctx) // what Run does when an operation woke it
	require.NoError(t, err)
	require.False(t, healed, "the rebuild read the return: no second rebuild")
	wantStock(t, inv, "mug", 5, 5, 0)
}

// TestDurableChangesWaitingLeaveTheHealAConnection: the journal's pool has two
// connections, what a heal needs (its rebuild lock's transaction and its rebuild's). A
// long rebuild of another process holds the rebuild lock, Redis has no marker, and this
// process's heal waits for the lock. Several Returns and a restock commit in the journal
// meanwhile, and their Redis steps, refused by the guard, wait for the rebuild; the
// Durable lets them wait a minute, longer than the test would. Waiting must not take the
// connections the others need: every Return's journal transaction commits, and once the
// long rebuild ends the heal gets its second connection and rebuilds (no deadlock until
// the lock wait timeout). The stock ends with every change applied exactly once.
func TestDurableChangesWaitingLeaveTheHealAConnection(t *testing.T) {
	ctx := context.Background()
	dsn := longLockWaitDSN(t)
	d, inv, rdb, db := durableAt(t, dsn, redisinventory.WithRebuildWait(time.Minute))
	const orders = 4
	setStock(t, inv, "mug", 10, 0)
	for i := range orders {
		id := "order-" + strconv.Itoa(i)
		_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: line("mug", 2), TTL: time.Hour})
		require.NoError(t, err)
		require.NoError(t, inv.Commit(ctx, id))
	}
	wantStock(t, inv, "mug", 2, 2, 8)
	redisinventory.SetMaxBatch(d, 1) // each Return in a transaction, and a wait, of its own
	db.SetMaxOpenConns(2)

	lock := holdRebuildLock(t, dsn)
	require.NoError(t, rdb.Del(ctx, "{inventory}:generation").Err()) // the long rebuild dropped the marker
	healed := make(chan error, 1)
	go func() {
		_, err := d.Heal(ctx) // what Run does
		healed <- err
	}()
	waitForLockWaiters(t, lock, 1) // the heal waits for the rebuild lock, on one connection

	var committed atomic.Int32
	allCommitted := make(chan struct{})
	redisinventory.SetHook(d, func(op, id string) {
		if op == "return" && committed.Add(1) == orders {
			close(allCommitted)
		}
	})
	restock := inventory.Adjustment{ID: "restock-1", SKU: "mug", Delta: 3, Reason: "restock"}
	returned, adjusted := make(chan error, orders), make(chan error, 1)
	for i := range orders {
		go func() { returned <- inv.Return(ctx, "order-"+strconv.Itoa(i)) }()
	}
	go func() {
		_, err := inv.Adjust(ctx, restock)
		adjusted <- err
	}()
	await(t, allCommitted, "the Returns' journal commits")
	stillHeld(t, lock)
	require.NoError(t, lock.Rollback()) // the long rebuild ends
	require.NoError(t, await(t, healed, "the heal"))

	failed := 0
	for range orders {
		if err := await(t, returned, "a Return"); err != nil {
			requireRetryLater(t, err)
			failed++
		}
	}
	adjustErr := await(t, adjusted, "the Adjust")
	if failed > 0 || adjustErr != nil {
		_, err := d.Heal(ctx) // what Run does when a failure woke it
		require.NoError(t, err)
	}
	if adjustErr != nil {
		requireRetryLater(t, adjustErr)
	}
	for i := range orders { // the callers' retries, or replays: nothing more moves
		require.NoError(t, inv.Return(ctx, "order-"+strconv.Itoa(i)))
	}
	_, err := inv.Adjust(ctx, restock)
	require.NoError(t, err)
	wantStock(t, inv, "mug", 13, 13, 0)
	h, err := d.Heal(ctx)
	require.NoError(t, err)
	require.False(t, h, "nothing left to rebuild")
}

// waitForLockWaiters waits, up to watchdog, until n statements of tx's database other than
// tx's own are taking the rebuild lock with FOR UPDATE (not SKIP LOCKED) while tx holds it:
// they wait for it. (INFORMATION_SCHEMA.INNODB_TRX does not always list a transaction
// whose first statement waits for a lock: MariaDB 10.11 shows it in PROCESSLIST only.)
func waitForLockWaiters(t *testing.T, tx bun.Tx, n int) {
	t.Helper()
	deadline := time.Now().Add(watchdog)
	for {
		var waiting int
		require.NoError(t, tx.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM information_schema.PROCESSLIST
 WHERE DB = DATABASE() AND ID <> CONNECTION_ID() AND COMMAND = 'Query' AND INFO LIKE '%''rebuild'' FOR UPDATE'`).Scan(&waiting))
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			require.FailNow(t, fmt.Sprintf("%d of %d statements wait for the rebuild lock after %v", waiting, n, watchdog))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDurableChangeBehindARebuildOnSQLite: the journal on SQLite, in one process, where the
// rebuild lock is the heal's mutex. A slow rebuild has read the journal and holds it while
// it writes Redis; a Return commits after that read, and its Redis step meets the rebuild.
// The Return gives up waiting once its rebuild wait has passed, with the rebuild still
// held, and answers 503; the heal that follows must rebuild, and the stock must end
// returned, once.
func TestDurableChangeBehindARebuildOnSQLite(t *testing.T) {
	ctx := context.Background()
	db, rdb := testenv.SQLite(t), testenv.Redis(t)
	require.NoError(t, redisinventory.CreateJournal(ctx, db))
	d := testkit.Must(redisinventory.NewDurable(rdb, db, redisinventory.WithRebuildWait(100*time.Millisecond)))(t)
	_, err := d.Heal(ctx)
	require.NoError(t, err)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "mug", 5, 0)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "order-1", Lines: line("mug", 2), TTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, inv.Commit(ctx, "order-1"))

	finish, _ := rebuildHeldAfterItsRead(t, d, rdb)
	returned := make(chan error, 1)
	go func() { returned <- inv.Return(ctx, "order-1") }()
	requireRetryLater(t, await(t, returned, "the Return"))
	finish()

	healed, err := d.Heal(ctx) // what Run does when the failure woke it
	require.NoError(t, err)
	require.True(t, healed, "the return no rebuild read asks for one")
	require.NoError(t, inv.Return(ctx, "order-1")) // the caller's retry: a replay
	wantStock(t, inv, "mug", 5, 5, 0)
}
