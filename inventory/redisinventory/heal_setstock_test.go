package redisinventory_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// stopBefore holds the first statement containing match until goOn is closed, once it has
// closed reached.
type stopBefore struct {
	match         string
	reached, goOn chan struct{}
	once          sync.Once
}

func (s *stopBefore) BeforeQuery(ctx context.Context, e *bun.QueryEvent) context.Context {
	if strings.Contains(e.Query, s.match) {
		s.once.Do(func() { close(s.reached); <-s.goOn })
	}
	return ctx
}

func (s *stopBefore) AfterQuery(context.Context, *bun.QueryEvent) {}

// afterCommand calls fn once, after the first command named name has had its answer.
type afterCommand struct {
	name string
	fn   func()
	once sync.Once
}

func (h *afterCommand) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *afterCommand) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == h.name {
			h.once.Do(h.fn)
		}
		return err
	}
}

func (h *afterCommand) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// processes are an admin's process A, whose SetStocks stop before their journal row (stop)
// once their script has run, and process B, on Redis clients and database pools of their
// own over one Redis and one journal, with "mug" set to 10 on hand.
type processes struct {
	stop       *stopBefore
	b          *redisinventory.Durable
	rdbB       *redis.Client
	invA, invB *inventory.Inventory
}

// twoProcesses makes processes, B's pool with hookB when it is not nil.
func twoProcesses(t *testing.T, hookB bun.QueryHook) processes {
	t.Helper()
	ctx := context.Background()
	dsn := testenv.MySQLDSN(t)
	rdb := testenv.Redis(t)
	rdbB := redis.NewClient(rdb.Options())
	t.Cleanup(func() { rdbB.Close() })
	dbA, dbB := testenv.MySQLAt(t, dsn), testenv.MySQLAt(t, dsn)
	require.NoError(t, redisinventory.CreateJournal(ctx, dbA))
	if hookB != nil {
		dbB = dbB.WithQueryHook(hookB)
	}
	stop := &stopBefore{match: ", buyer_limit = ", reached: make(chan struct{}), goOn: make(chan struct{})}
	a := testkit.Must(redisinventory.NewDurable(rdb, dbA.WithQueryHook(stop)))(t)
	b := testkit.Must(redisinventory.NewDurable(rdbB, dbB))(t)
	for _, d := range []*redisinventory.Durable{a, b} {
		_, err := d.Heal(ctx)
		require.NoError(t, err)
	}
	p := processes{stop: stop, b: b, rdbB: rdbB, invA: testkit.Must(inventory.New(a))(t), invB: testkit.Must(inventory.New(b))(t)}
	setStock(t, p.invB, "mug", 10, 0)
	return p
}

// TestDurableHealDuringSetStock: an admin's SetStock (process A) has run its script, which
// moved Redis's marker to the generation its transaction is about to commit, and is
// finishing that transaction, when process B's healer looks at Redis: the journal's
// generation it read is the one before, the marker the next one. That is a setting in
// flight, which commits a moment later, not Redis lost or ahead of the journal: the heal
// must leave Redis alone (a rebuild fails every call of every process while it runs and
// bumps the generation under the setting's feet), and the setting holds.
func TestDurableHealDuringSetStock(t *testing.T) {
	ctx := context.Background()
	p := twoProcesses(t, nil)
	stop, b, rdbB, invA, invB := p.stop, p.b, p.rdbB, p.invA, p.invB
	_, err := invB.Reserve(ctx, inventory.ReserveRequest{ID: "r", Lines: line("mug", 3), TTL: time.Hour})
	require.NoError(t, err)

	set := make(chan error, 1)
	go func() {
		_, err := invA.SetStock(ctx, inventory.StockSetting{SKU: "mug", OnHand: 20})
		set <- err
	}()
	await(t, stop.reached, "the SetStock's script") // run; its journal row and COMMIT to come
	// B's heal reads the journal's generation, then the marker; the setting commits once
	// the heal has read the marker.
	rdbB.AddHook(&afterCommand{name: "mget", fn: func() { close(stop.goOn) }})
	type answer struct {
		healed bool
		err    error
	}
	heal := make(chan answer, 1)
	go func() {
		h, err := b.Heal(ctx)
		heal <- answer{h, err}
	}()
	require.NoError(t, await(t, set, "the SetStock"))
	got := await(t, heal, "the heal")
	require.NoError(t, got.err)
	require.False(t, got.healed, "a SetStock in flight is no lost data: nothing to rebuild")
	journal, marker, err := b.Generation(ctx)
	require.NoError(t, err)
	require.Equal(t, journal, marker)
	wantStock(t, invB, "mug", 20, 17, 0)
	require.NoError(t, invB.Commit(ctx, "r"))
	wantStock(t, invB, "mug", 17, 17, 3)
}

// TestDurableStockReadDuringSetStock: an admin's SetStock (process A) has run its script,
// which moved Redis's marker to the generation its transaction is about to commit, when
// process B reads the stock: the marker is ahead of the journal's generation B reads. That
// is a setting in flight, not lost data: B's read waits for it (reading the generation, then
// Redis, again) and answers the stock it set, rather than a 503 for every read while a
// setting commits.
func TestDurableStockReadDuringSetStock(t *testing.T) {
	ctx := context.Background()
	var (
		goOn  sync.Once
		stop  *stopBefore
		armed atomic.Bool
		reads atomic.Int32
	)
	release := func() { goOn.Do(func() { close(stop.goOn) }) }
	// The setting commits as B reads the generation a second time: B read it, then Redis,
	// while the setting was in flight.
	p := twoProcesses(t, &fnHook{before: func(q string) {
		if armed.Load() && strings.Contains(q, "FROM inventory_journal_generation WHERE name = 'gen'") && reads.Add(1) == 2 {
			release()
		}
	}})
	stop, invA, invB := p.stop, p.invA, p.invB

	set := make(chan error, 1)
	go func() {
		_, err := invA.SetStock(ctx, inventory.StockSetting{SKU: "mug", OnHand: 20})
		set <- err
	}()
	await(t, stop.reached, "the SetStock's script") // run; its journal row and COMMIT to come
	armed.Store(true)
	st, err := invB.Stock(ctx, "mug")
	release() // if B did not wait for it
	require.NoError(t, await(t, set, "the SetStock"))
	require.NoError(t, err, "a stock read while a setting commits")
	require.Equal(t, [2]int64{20, 20}, [2]int64{st.OnHand, st.Available})
}
