package redisinventory_test

import (
	"context"
	"log"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// A Redis inventory whose system of record is a SQL journal: built from it at start, and
// rebuilt by the healer whenever Redis loses data.
func ExampleNewDurable() {
	ctx := context.Background()
	var db *bun.DB        // MySQL/MariaDB, e.g. bun.NewDB(sqldb, mysqldialect.New())
	var rdb *redis.Client // e.g. redis.NewClient(&redis.Options{Addr: "localhost:6379"})

	if err := redisinventory.CreateJournal(ctx, db); err != nil {
		log.Fatal(err)
	}
	stock, err := redisinventory.NewDurable(rdb, db, redisinventory.WithLogger(slog.Default()))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := stock.Heal(ctx); err != nil { // builds Redis from the journal when needed
		log.Print(err) // the healer below keeps trying; requests fail closed meanwhile
	}
	go stock.Run(ctx, time.Second) //nolint:errcheck // returns nil when ctx ends

	inv, err := inventory.New(stock)
	if err != nil {
		panic(err)
	}
	_, _ = inv.SetStock(ctx, inventory.StockSetting{SKU: "tee", OnHand: 100})
}
