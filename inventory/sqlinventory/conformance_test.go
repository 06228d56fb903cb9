package sqlinventory_test

import (
	"context"
	"testing"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/inventorytest"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// harness runs the suite on a fresh database from open.
func harness(open func(testing.TB) *bun.DB) inventorytest.Harness {
	return inventorytest.Harness{
		JoinsTx: true,
		New: func(tb testing.TB, opts ...inventory.Option) (*inventory.Inventory, *bun.DB) {
			db := open(tb)
			if err := sqlinventory.CreateSchema(context.Background(), db); err != nil {
				tb.Fatal(err)
			}
			return testkit.Must(inventory.New(sqlinventory.New(db), opts...))(tb), db
		},
	}
}

func TestConformance(t *testing.T) {
	t.Run("MySQL", func(t *testing.T) {
		t.Parallel()
		inventorytest.Run(t, harness(testenv.MySQL))
	})
	t.Run("SQLite", func(t *testing.T) {
		t.Parallel()
		inventorytest.Run(t, harness(testenv.SQLite))
	})
}

func BenchmarkMySQL(b *testing.B)  { inventorytest.Benchmark(b, harness(testenv.MySQL)) }
func BenchmarkSQLite(b *testing.B) { inventorytest.Benchmark(b, harness(testenv.SQLite)) }
