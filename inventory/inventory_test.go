package inventory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
	"github.com/commercekit/commercekit/observe"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestLinesEncoding(t *testing.T) {
	ls := []inventory.Line{{SKU: "a-1", Qty: 2}, {SKU: "b:2/x", Qty: 999}}
	s := inventory.EncodeLines(ls)
	assert.Equal(t, "a-1=2,b:2/x=999", s)
	back, err := inventory.DecodeLines(s)
	require.NoError(t, err)
	assert.Equal(t, ls, back)
	for _, bad := range []string{"", "a", "a=", "=1", "a=0", "a=-1", "a=1,", "a=x"} {
		_, err := inventory.DecodeLines(bad)
		assert.Error(t, err, bad)
	}
}

// observer records what an Inventory reports.

// TestObserverAndDefaults checks the metrics hook and the default TTL on a real backend.
func TestObserverAndDefaults(t *testing.T) {
	ctx := context.Background()
	db := testenv.SQLite(t)
	require.NoError(t, sqlinventory.CreateSchema(ctx, db))
	require.NoError(t, sqlinventory.CreateSchema(ctx, db), "CreateSchema is idempotent")
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	obs := &observe.Recorder{}
	inv := testkit.Must(inventory.New(sqlinventory.New(db), inventory.WithObserver(obs), inventory.WithClock(func() time.Time { return now })))(t)

	_, err := inv.SetStock(ctx, inventory.StockSetting{SKU: "a", OnHand: 1})
	require.NoError(t, err)
	r, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "r1", Lines: []inventory.Line{{SKU: "a", Qty: 1}}})
	require.NoError(t, err)
	assert.Equal(t, now.Add(inventory.DefaultTTL), r.ExpiresAt)
	_, err = inv.Reserve(ctx, inventory.ReserveRequest{ID: "r2", Lines: []inventory.Line{{SKU: "a", Qty: 1}}})
	require.ErrorIs(t, err, inventory.ErrInsufficientStock)
	now = now.Add(inventory.DefaultTTL)
	n, err := inv.Sweep(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)

	var ops []string
	for _, e := range obs.Events() {
		switch {
		case e.Err != nil:
			ops = append(ops, e.Name+" failed")
		case e.Name != "expired":
			ops = append(ops, e.Name)
		}
	}
	assert.Equal(t, []string{"set_stock", "reserve", "reserve failed", "sweep"}, ops)
	assert.EqualValues(t, 1, obs.Sum("expired", map[string]string{"kind": "reservation"}))
}

// TestStateErrors checks the typed errors' matching and messages.
func TestStateErrors(t *testing.T) {
	for st, want := range map[inventory.State]error{
		inventory.StateCommitted: inventory.ErrReservationCommitted,
		inventory.StateReleased:  inventory.ErrReservationReleased,
		inventory.StateExpired:   inventory.ErrReservationExpired,
	} {
		err := error(&inventory.StateError{ID: "r1", State: st})
		assert.ErrorIs(t, err, want)
		assert.Equal(t, `inventory: reservation "r1" is `+string(st), err.Error())
	}
	err := inventory.Contention(errors.New("Error 1213: Deadlock found"))
	assert.ErrorIs(t, err, inventory.ErrContention)
	assert.ErrorIs(t, inventory.NotFound("x"), inventory.ErrReservationNotFound)
}

// TestNewRefusesBadOptions checks that New refuses every invalid option value with an
// error naming the option, and that valid values take effect.
func TestNewRefusesBadOptions(t *testing.T) {
	db := testenv.SQLite(t)
	construct := func(opts ...inventory.Option) (*inventory.Inventory, error) {
		return inventory.New(sqlinventory.New(db), opts...)
	}
	testkit.RefusesBadOptions(t, construct, map[string]inventory.Option{
		"WithDefaultTTL: 0s":     inventory.WithDefaultTTL(0),
		"WithDefaultTTL: -1s":    inventory.WithDefaultTTL(-time.Second),
		"WithSweepInterval: 0s":  inventory.WithSweepInterval(0),
		"WithSweepInterval: -1s": inventory.WithSweepInterval(-time.Second),
		"WithSweepBatch: 0":      inventory.WithSweepBatch(0),
		"WithSweepBatch: -1":     inventory.WithSweepBatch(-1),
		"WithClock: nil":         inventory.WithClock(nil),
		"WithLogger: nil":        inventory.WithLogger(nil),
		"WithObserver: nil":      inventory.WithObserver(nil),
	})

	ctx := context.Background()
	require.NoError(t, sqlinventory.CreateSchema(ctx, db))
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	inv := testkit.Must(construct(inventory.WithDefaultTTL(time.Minute), inventory.WithSweepInterval(time.Millisecond),
		inventory.WithSweepBatch(1), inventory.WithClock(func() time.Time { return now })))(t)
	_, err := inv.SetStock(ctx, inventory.StockSetting{SKU: "a", OnHand: 1})
	require.NoError(t, err)
	r, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "r1", Lines: []inventory.Line{{SKU: "a", Qty: 1}}})
	require.NoError(t, err)
	assert.Equal(t, now.Add(time.Minute), r.ExpiresAt, "WithDefaultTTL took effect")
}
