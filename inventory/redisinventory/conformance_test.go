package redisinventory_test

import (
	"testing"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/inventorytest"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var harness = inventorytest.Harness{
	JoinsTx: false,
	New: func(tb testing.TB, opts ...inventory.Option) (*inventory.Inventory, *bun.DB) {
		return testkit.Must(inventory.New(testkit.Must(redisinventory.New(testenv.Redis(tb)))(tb), opts...))(tb), nil
	},
}

func TestConformance(t *testing.T) { inventorytest.Run(t, harness) }

func BenchmarkRedis(b *testing.B) { inventorytest.Benchmark(b, harness) }

// durableHarness runs the suite on the journaled backend: MySQL and Redis of the test's own.
var durableHarness = inventorytest.Harness{
	JoinsTx: false,
	New: func(tb testing.TB, opts ...inventory.Option) (*inventory.Inventory, *bun.DB) {
		d, _, _ := newDurable(tb)
		return testkit.Must(inventory.New(d, opts...))(tb), nil
	},
}

func TestDurableConformance(t *testing.T) { inventorytest.Run(t, durableHarness) }

func BenchmarkDurable(b *testing.B) { inventorytest.Benchmark(b, durableHarness) }
