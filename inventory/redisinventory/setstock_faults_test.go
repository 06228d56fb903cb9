package redisinventory_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// faultOp is one call of the clients of TestDurableSetStockUnderFaults: a step of a
// reservation's life (reserve, commit, release, return) or an adjustment, and its answer.
type faultOp struct {
	kind string // reserve, commit, release, return, adjust
	id   string
	sku  string
	qty  int64 // a reservation's units, an adjustment's delta
	err  error
}

// faultSKUs: the plain ones are never set during the run, so their counts follow from the
// answered calls alone; an admin sets the others' on-hand count over and over meanwhile.
var (
	plainSKUs = []string{"p0", "p1"}
	setSKUs   = []string{"s0", "s1"}
)

// TestDurableSetStockUnderFaults: two processes (two Durables on one Redis and one
// journal, each with its healer running) serve clients that reserve, commit, release,
// return, restock and remove units of four SKUs, while an admin, on the second process,
// sets the on-hand count of two of them over and over (each SetStock moves Redis's
// generation marker, so the Redis steps of restocks, returns, releases and expiries that
// committed just before it are refused and go through afterRebuild, setSince included), and
// a real fault lands: Redis restarted empty, Redis paused past the client's timeouts,
// MariaDB's connections killed, MariaDB paused past the driver's timeouts. Each client
// call answers success or a retry-later error (errcode.ErrUnavailable, or contention),
// never a business answer. Once the fault has healed, every call that failed is retried
// with its ID until it answers, and then:
//   - each reservation is in the journal in the state its answers say, and a replay of
//     each call answers the same;
//   - the SKUs never set hold exactly initial + restocks − removals − sold + returned on
//     hand, the live reservations' units reserved, and the sold units, in Redis and in the
//     journal;
//   - every SKU, set ones included, holds in Redis exactly what a rebuild from the journal
//     writes (on hand, available, reserved, sold; the due reservations), and what the
//     journal's rows add up to; nothing negative (never more units sold than there are).
func TestDurableSetStockUnderFaults(t *testing.T) {
	for _, fault := range []string{"redis-restart-empty", "redis-pause", "redis-pauses", "mysql-kill", "mysql-pause"} {
		t.Run(fault, func(t *testing.T) { setStockUnderFault(t, fault) })
	}
}

func setStockUnderFault(t *testing.T, fault string) {
	ctx := context.Background()
	var (
		ownRedis, ownDB *testenv.Own
		redisAddr, dsn  string
		rdb             *redis.Client
	)
	switch fault {
	case "redis-restart-empty", "redis-pause", "redis-pauses":
		ownRedis = testenv.OwnRedis(t)
		redisAddr = ownRedis.Addr
		dsn = testenv.MySQLDSN(t)
	case "mysql-kill":
		rdb = testenv.Redis(t)
		dsn = testenv.MySQLDSN(t)
	case "mysql-pause":
		rdb = testenv.Redis(t)
		ownDB, dsn = testenv.OwnMySQL(t)
		cfg, err := mysql.ParseDSN(dsn)
		require.NoError(t, err)
		// A statement in flight when the server freezes fails after a second: a COMMIT
		// whose answer is lost, as with a real network timeout.
		cfg.ReadTimeout, cfg.WriteTimeout = time.Second, time.Second
		dsn = cfg.FormatDSN()
	}
	client := func() *redis.Client {
		var c *redis.Client
		if rdb != nil {
			opts := *rdb.Options()
			c = redis.NewClient(&opts)
		} else {
			c = redis.NewClient(&redis.Options{Addr: redisAddr})
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	rdbA, rdbB := client(), client()
	if ownRedis != nil {
		// No snapshot to come back with: a restart comes back empty.
		require.NoError(t, rdbA.ConfigSet(ctx, "save", "").Err())
		require.NoError(t, rdbA.ConfigSet(ctx, "appendonly", "no").Err())
	}
	dbA, dbB, killer := testenv.MySQLAt(t, dsn), testenv.MySQLAt(t, dsn), testenv.MySQLAt(t, dsn)
	require.NoError(t, redisinventory.CreateJournal(ctx, dbA))
	a := testkit.Must(redisinventory.NewDurable(rdbA, dbA))(t)
	b := testkit.Must(redisinventory.NewDurable(rdbB, dbB))(t)
	for _, d := range []*redisinventory.Durable{a, b} {
		_, err := d.Heal(ctx)
		require.NoError(t, err)
	}
	invA, invB := testkit.Must(inventory.New(a))(t), testkit.Must(inventory.New(b))(t)
	const initial = 10_000
	for _, sku := range append(append([]string{}, plainSKUs...), setSKUs...) {
		setStock(t, invB, sku, initial, 0)
	}
	// Reservations that fall due during the run, swept by the sweeper below: expiries whose
	// Redis steps meet the SetStocks and the fault.
	var due []faultOp
	for i := range 20 {
		sku := []string{"p0", "s0", "p1", "s1"}[i%4]
		id := fmt.Sprintf("due-%d", i)
		_, err := invA.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: line(sku, 1), TTL: time.Duration(300+150*i) * time.Millisecond})
		require.NoError(t, err)
		due = append(due, faultOp{kind: "reserve", id: id, sku: sku, qty: 1})
	}

	runCtx, stopRun := context.WithCancel(ctx)
	var healers sync.WaitGroup
	for _, d := range []*redisinventory.Durable{a, b} {
		healers.Go(func() { _ = d.Run(runCtx, 50*time.Millisecond) })
	}
	defer func() { stopRun(); healers.Wait() }()

	var (
		stop    atomic.Bool
		mu      sync.Mutex
		bad     []string
		failed  int
		chains  [][]faultOp // each reservation's calls, in order, up to the first that failed
		adjusts []faultOp
		sets    atomic.Int64
	)
	// retryLater reports whether err is an answer a client retries later.
	retryLater := func(err error) bool {
		return errors.Is(err, errcode.ErrUnavailable) || errors.Is(err, inventory.ErrContention)
	}
	note := func(what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
		case retryLater(err):
			failed++
		default:
			bad = append(bad, fmt.Sprintf("%s: %v", what, err))
		}
	}
	invs := []*inventory.Inventory{invA, invB}
	skus := []string{"p0", "s0", "p1", "s1"}
	var clients sync.WaitGroup
	for c := range 6 {
		clients.Go(func() {
			inv := invs[c%2]
			for i := 0; !stop.Load(); i++ {
				sku := skus[(c+i)%len(skus)]
				id := fmt.Sprintf("c%d-%d", c, i)
				if i%4 == 3 {
					delta := int64(2)
					if i%8 == 7 {
						delta = -1
					}
					_, err := inv.Adjust(ctx, inventory.Adjustment{ID: "adj-" + id, SKU: sku, Delta: delta, Reason: "count"})
					note("adjust adj-"+id, err)
					mu.Lock()
					adjusts = append(adjusts, faultOp{kind: "adjust", id: "adj-" + id, sku: sku, qty: delta, err: err})
					mu.Unlock()
					continue
				}
				qty := int64(1 + i%2)
				var chain []faultOp
				step := func(kind string, call func() error) bool {
					err := call()
					note(kind+" "+id, err)
					chain = append(chain, faultOp{kind: kind, id: id, sku: sku, qty: qty, err: err})
					return err == nil
				}
				ok := step("reserve", func() error {
					_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: id, Lines: line(sku, qty), TTL: time.Hour})
					return err
				})
				if ok {
					switch i % 4 {
					case 0: // sold, then returned
						if step("commit", func() error { return inv.Commit(ctx, id) }) {
							step("return", func() error { return inv.Return(ctx, id) })
						}
					case 1:
						step("release", func() error { return inv.Release(ctx, id) })
					case 2:
						step("commit", func() error { return inv.Commit(ctx, id) })
					}
				}
				mu.Lock()
				chains = append(chains, chain)
				mu.Unlock()
				if !ok || chain[len(chain)-1].err != nil {
					time.Sleep(5 * time.Millisecond) // a client backing off
				}
			}
		})
	}
	clients.Go(func() { // the admin, on process B
		for j := 0; !stop.Load(); j++ {
			_, err := invB.SetStock(ctx, inventory.StockSetting{SKU: setSKUs[j%2], OnHand: initial + int64(j%7)})
			note("set stock", err)
			if err == nil {
				sets.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	clients.Go(func() { // the sweeper
		for !stop.Load() {
			_, err := invA.Sweep(ctx)
			note("sweep", err)
			time.Sleep(50 * time.Millisecond)
		}
	})

	time.Sleep(time.Second)
	switch fault {
	case "redis-restart-empty":
		ownRedis.Stop(t, 0)
		ownRedis.Start(t)
	case "redis-pause":
		ownRedis.Pause(t)
		time.Sleep(4 * time.Second) // past go-redis's 3 s read timeout
		ownRedis.Unpause(t)
	case "redis-pauses":
		// Pauses shorter than the client's timeouts: the calls sent meanwhile all run
		// once Redis resumes, in the order it reads their connections, not the order they
		// were sent in: a SetStock's script before the Redis step of a change that
		// committed in the journal before it.
		for range 6 {
			ownRedis.Pause(t)
			time.Sleep(700 * time.Millisecond)
			ownRedis.Unpause(t)
			time.Sleep(300 * time.Millisecond)
		}
	case "mysql-kill":
		for range 4 {
			testenv.KillConnections(t, killer)
			time.Sleep(300 * time.Millisecond)
		}
	case "mysql-pause":
		ownDB.Pause(t)
		time.Sleep(3 * time.Second)
		ownDB.Unpause(t)
	}
	// The clients go on until the inventory serves again, and a while after.
	require.Eventually(t, func() bool {
		_, err := invA.Stock(ctx, "p0")
		return err == nil
	}, time.Minute, 50*time.Millisecond, "the healer rebuilds once the fault is over")
	time.Sleep(time.Second)
	stop.Store(true)
	clients.Wait()
	stopRun()
	healers.Wait()
	require.Empty(t, bad, "calls answered something other than retry-later")
	require.NotZero(t, sets.Load(), "SetStocks succeeded meanwhile")
	t.Logf("%s: %d calls answered retry-later; %d reservations, %d adjustments, %d SetStocks", fault, failed, len(chains), len(adjusts), sets.Load())

	// What Run does for a change that asked for a rebuild; then every call that failed is
	// retried under its ID until it answers.
	heal := func() {
		for _, d := range []*redisinventory.Durable{a, b} {
			_, err := d.Heal(ctx)
			require.NoError(t, err)
		}
	}
	heal()
	retry := func(what string, call func() error) error {
		for range 20 {
			err := call()
			if !retryLater(err) {
				return err
			}
			heal()
		}
		t.Fatalf("%s: still retry-later after 20 heals", what)
		return nil
	}
	call := func(op faultOp) error {
		switch op.kind {
		case "reserve":
			_, err := invA.Reserve(ctx, inventory.ReserveRequest{ID: op.id, Lines: line(op.sku, op.qty), TTL: time.Hour})
			return err
		case "commit":
			return invA.Commit(ctx, op.id)
		case "release":
			return invA.Release(ctx, op.id)
		case "return":
			return invA.Return(ctx, op.id)
		case "adjust":
			_, err := invA.Adjust(ctx, inventory.Adjustment{ID: op.id, SKU: op.sku, Delta: op.qty, Reason: "count"})
			return err
		}
		panic(op.kind)
	}
	for i, op := range adjusts {
		if op.err != nil {
			adjusts[i].err = retry(op.kind+" "+op.id, func() error { return call(op) })
			require.NoError(t, adjusts[i].err, "the retry of %s %s", op.kind, op.id)
		}
	}
	for _, chain := range chains {
		if last := &chain[len(chain)-1]; last.err != nil {
			last.err = retry(last.kind+" "+last.id, func() error { return call(*last) })
			require.NoError(t, last.err, "the retry of %s %s", last.kind, last.id)
		}
	}
	_, err := invA.Sweep(ctx) // the due reservations, all past their deadline now
	require.NoError(t, err)
	heal()

	// The journal holds each reservation in the state its answers say, and a replay of
	// each call answers the same.
	want := map[string]inventory.State{
		"reserve": inventory.StateReserved, "commit": inventory.StateCommitted,
		"release": inventory.StateReleased, "return": inventory.StateReturned,
	}
	type counts struct{ onHand, reserved, sold int64 }
	model := map[string]*counts{}
	for _, sku := range plainSKUs {
		model[sku] = &counts{onHand: initial}
	}
	for _, op := range due {
		r, err := invA.Get(ctx, op.id)
		require.NoError(t, err)
		require.Equal(t, inventory.StateExpired, r.State, op.id)
	}
	for _, chain := range chains {
		last := chain[len(chain)-1]
		r, err := invA.Get(ctx, last.id)
		require.NoError(t, err)
		require.Equal(t, want[last.kind], r.State, last.id)
		// The last call's replay answers the same (an earlier step's replay meets the later
		// state: a commit of a returned reservation answers that it is returned).
		require.NoError(t, call(last), "the replay of %s %s", last.kind, last.id)
		require.Equal(t, line(last.sku, last.qty), r.Lines, last.id)
		m := model[last.sku]
		if m == nil {
			continue
		}
		switch last.kind {
		case "reserve":
			m.reserved += last.qty
		case "commit":
			m.onHand -= last.qty
			m.sold += last.qty
		}
	}
	for _, op := range adjusts {
		require.NoError(t, call(op), "the replay of %s %s", op.kind, op.id)
		if m := model[op.sku]; m != nil {
			m.onHand += op.qty
		}
	}

	all := append(append([]string{}, plainSKUs...), setSKUs...)
	snapshot := func() map[string]any {
		t.Helper()
		out := map[string]any{}
		st, err := a.Stocks(ctx, all)
		require.NoError(t, err)
		for _, sku := range all {
			s := st[sku]
			out["stock:"+sku] = [4]int64{s.OnHand, s.Available, s.Reserved, s.Sold}
		}
		dueSet, err := rdbA.ZRangeWithScores(ctx, "{inventory}:due", 0, -1).Result()
		require.NoError(t, err)
		out["due"] = dueSet
		return out
	}
	held := snapshot()
	for _, sku := range plainSKUs {
		m := model[sku]
		assert.Equal(t, [4]int64{m.onHand, m.onHand - m.reserved, m.reserved, m.sold}, held["stock:"+sku],
			"%s: Redis's on hand, available, reserved, sold against the answered calls", sku)
	}
	for _, sku := range all {
		on, res, sold := journalCounts(t, dbA, sku)
		assert.Equal(t, [4]int64{on, on - res, res, sold}, held["stock:"+sku], "%s: Redis against the journal's rows", sku)
		assert.GreaterOrEqual(t, on-res, int64(0), "%s: available", sku)
	}
	_, err = a.Rebuild(ctx)
	require.NoError(t, err)
	assert.Equal(t, held, snapshot(), "Redis held what a rebuild from the journal writes")
}

// journalCounts adds up the journal's rows of sku: its on-hand count (base − the units of
// committed reservations), its reserved units and its sold (committed) units.
func journalCounts(t *testing.T, db *bun.DB, sku string) (onHand, reserved, sold int64) {
	t.Helper()
	ctx := context.Background()
	var base int64
	require.NoError(t, db.QueryRowContext(ctx, `SELECT base FROM inventory_journal_stock WHERE sku = ?`, sku).Scan(&base))
	require.NoError(t, db.QueryRowContext(ctx, `SELECT
 COALESCE(SUM(CASE WHEN r.state = 'reserved' THEN l.qty END), 0),
 COALESCE(SUM(CASE WHEN r.state = 'committed' THEN l.qty END), 0)
 FROM inventory_journal_lines l JOIN inventory_journal_reservations r ON r.id = l.reservation_id WHERE l.sku = ?`, sku).
		Scan(&reserved, &sold))
	return base - sold, reserved, sold
}
