package inventory_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
)

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
