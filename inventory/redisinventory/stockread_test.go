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

// fnHook calls before with every statement's text before it is sent.
type fnHook struct {
	before func(q string)
}

func (h *fnHook) BeforeQuery(ctx context.Context, e *bun.QueryEvent) context.Context {
	if h.before != nil {
		h.before(e.Query)
	}
	return ctx
}
func (h *fnHook) AfterQuery(context.Context, *bun.QueryEvent) {}

// TestDurableStockReadAfterADeadSetStock: a SetStock's transaction dies after its script
// (Redis: marker G+1 and 99 on hand; the journal: G and 10). A reader reads that marker and
// stock, then the journal's generation, while a rebuild (another process) has dropped the
// marker and bumped the generation to G+1 without committing yet; the rebuild commits a
// moment later. The reader must not answer the 99 the journal never held: a marker equal to
// the generation says Redis holds that generation only when Redis was read after it.
func TestDurableStockReadAfterADeadSetStock(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.MySQLDSN(t)
	rdb := testenv.Redis(t)
	opts := rdb.Options()
	mk := func() *redis.Client { c := redis.NewClient(opts); t.Cleanup(func() { c.Close() }); return c }
	dbS, dbB, dbR := testenv.MySQLAt(t, dsn), testenv.MySQLAt(t, dsn), testenv.MySQLAt(t, dsn)
	require.NoError(t, redisinventory.CreateJournal(ctx, dbS))

	// Setter: its SetStock's journal UPDATE fails (ctx canceled) after the script ran.
	sctx, scancel := context.WithCancel(ctx)
	var killSet atomic.Bool
	hs := &fnHook{before: func(q string) {
		if killSet.Load() && strings.Contains(q, ", buyer_limit = ") {
			scancel()
			time.Sleep(20 * time.Millisecond)
		}
	}}
	s := testkit.Must(redisinventory.NewDurable(mk(), dbS.WithQueryHook(hs)))(t)
	// Rebuilder: holds its bump transaction (gen row X-locked, uncommitted) until released.
	var holdRebuild atomic.Bool
	reached, goOn := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hr := &fnHook{before: func(q string) {
		if holdRebuild.Load() && strings.Contains(q, "SELECT sku, base, buyer_limit FROM inventory_journal_stock") {
			once.Do(func() { close(reached); <-goOn })
		}
	}}
	r := testkit.Must(redisinventory.NewDurable(mk(), dbR.WithQueryHook(hr)))(t)
	// Reader.
	var armB atomic.Bool
	var onceB sync.Once
	rebuilt := make(chan error, 1)
	hb := &fnHook{before: func(q string) {
		if !armB.Load() {
			return
		}
		if strings.Contains(q, "WHERE name = 'gen'") && !strings.Contains(q, "LOCK IN SHARE MODE") {
			onceB.Do(func() {
				// between the reader's Redis read and its currentGen: a rebuild drops the
				// marker and bumps the generation (uncommitted yet)
				holdRebuild.Store(true)
				go func() { _, err := r.Rebuild(ctx); rebuilt <- err }()
				<-reached
				// The rebuild commits while the reader is on its way (ordering, not timing,
				// is what the test checks: the reader may answer before or after it).
				go func() { time.Sleep(300 * time.Millisecond); close(goOn) }()
			})
		}
	}}
	b := testkit.Must(redisinventory.NewDurable(mk(), dbB.WithQueryHook(hb)))(t)
	for _, d := range []*redisinventory.Durable{s, b} {
		_, err := d.Heal(ctx)
		require.NoError(t, err)
	}
	invS, invB := testkit.Must(inventory.New(s))(t), testkit.Must(inventory.New(b))(t)
	setStock(t, invB, "mug", 10, 0)
	_, err := invB.Stock(ctx, "mug") // B caches the generation
	require.NoError(t, err)

	killSet.Store(true)
	_, err = invS.SetStock(sctx, inventory.StockSetting{SKU: "mug", OnHand: 99})
	require.Error(t, err, "the setting's transaction died after its script")

	armB.Store(true)
	st, err := invB.Stock(ctx, "mug")
	require.NoError(t, <-rebuilt)
	if err != nil {
		requireRebuilding(t, err)
	} else {
		require.Equal(t, int64(10), st.OnHand, "the reader answered a setting the journal never committed")
	}
	wantStock(t, invB, "mug", 10, 10, 0)
}

// TestDurableStockReadBeforeTheFirstBuild: a journal never built nor set (generation 0) and
// a Redis without a marker hold no stock: a read of a SKU answers that the SKU is unknown,
// as it does once built, not a dependency failure.
func TestDurableStockReadBeforeTheFirstBuild(t *testing.T) {
	ctx := context.Background()
	db := testenv.MySQL(t)
	require.NoError(t, redisinventory.CreateJournal(ctx, db))
	d := testkit.Must(redisinventory.NewDurable(testenv.Redis(t), db))(t)
	inv := testkit.Must(inventory.New(d))(t)
	_, err := inv.Stock(ctx, "mug")
	require.ErrorIs(t, err, inventory.ErrUnknownSKU)
}
