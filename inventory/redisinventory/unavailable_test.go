package redisinventory_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// everyOperation runs each operation of inv once and returns its error by name.
func everyOperation(ctx context.Context, inv *inventory.Inventory) map[string]error {
	errs := map[string]error{}
	_, errs["reserve"] = inv.Reserve(ctx, inventory.ReserveRequest{ID: "r1", Lines: line("mug", 1), TTL: time.Hour})
	errs["commit"] = inv.Commit(ctx, "r1")
	errs["release"] = inv.Release(ctx, "r1")
	errs["return"] = inv.Return(ctx, "r1")
	_, errs["get"] = inv.Get(ctx, "r1")
	_, errs["set stock"] = inv.SetStock(ctx, inventory.StockSetting{SKU: "mug", OnHand: 5})
	_, errs["adjust"] = inv.Adjust(ctx, inventory.Adjustment{ID: "a1", SKU: "mug", Delta: 1, Reason: "restock"})
	_, errs["stock"] = inv.Stock(ctx, "mug")
	_, errs["sweep"] = inv.Sweep(ctx)
	return errs
}

// requireUnavailable fails the test with every operation whose error does not match
// errcode.ErrUnavailable.
func requireUnavailable(t *testing.T, errs map[string]error) {
	t.Helper()
	wrong := map[string]string{}
	for op, err := range errs {
		if !errors.Is(err, errcode.ErrUnavailable) {
			wrong[op] = fmt.Sprint(err)
		}
	}
	require.Empty(t, wrong, "operations whose error does not match errcode.ErrUnavailable")
}

// TestPlainRedisUnreachable: with Redis unreachable, every operation of the plain backend
// fails with an error matching errcode.ErrUnavailable (a dependency failure, "retry
// later"), never an untyped error.
func TestPlainRedisUnreachable(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: closedPort(t), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	inv := testkit.Must(inventory.New(testkit.Must(redisinventory.New(rdb))(t)))(t)
	requireUnavailable(t, everyOperation(ctx, inv))
}

// TestDurableJournalUnreachable: with the journal's database unreachable (Redis up), every
// operation of a Durable fails with an error matching errcode.ErrUnavailable.
func TestDurableJournalUnreachable(t *testing.T) {
	ctx := context.Background()
	_, rdb, _ := newDurable(t)
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User, cfg.Timeout = "tcp", closedPort(t), "root", time.Second
	sqldb, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	db := bun.NewDB(sqldb, mysqldialect.New())
	t.Cleanup(func() { db.Close() })
	d := testkit.Must(redisinventory.NewDurable(rdb, db))(t)
	inv := testkit.Must(inventory.New(d))(t)
	requireUnavailable(t, everyOperation(ctx, inv))
}
