package testenv

import (
	"database/sql"
	"testing"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/sqliteshim"
)

// SQLite returns a *bun.DB (SQLite dialect) on an in-memory database of the test's own,
// closed when the test ends. No container is involved.
//
// The pool holds exactly one connection: SQLite serialises writers anyway, and one
// connection rules out SQLITE_BUSY. Code that holds a transaction must do all its work
// through that transaction (the bun.IDB it was given); a second statement on the *bun.DB
// while the transaction is open waits for it forever. A connection of its own, idle, keeps
// the in-memory database alive: the pool may drop its connection (one whose statement a
// cancelled context interrupted, say), and an in-memory database lives only as long as a
// connection to it.
func SQLite(tb testing.TB) *bun.DB {
	tb.Helper()
	dsn := "file:" + uniqueName(tb, "mem") + "?mode=memory&cache=shared&_foreign_keys=1"
	keeper, err := sql.Open(sqliteshim.ShimName, dsn)
	if err == nil {
		err = keeper.Ping()
	}
	if err != nil {
		tb.Fatalf("testenv: opening SQLite: %v", err)
	}
	sqldb, err := sql.Open(sqliteshim.ShimName, dsn)
	if err != nil {
		tb.Fatalf("testenv: opening SQLite: %v", err)
	}
	sqldb.SetMaxOpenConns(1)
	sqldb.SetMaxIdleConns(1)
	sqldb.SetConnMaxLifetime(0)
	db := bun.NewDB(sqldb, sqlitedialect.New())
	tb.Cleanup(func() {
		db.Close()
		keeper.Close()
	})
	return db
}
