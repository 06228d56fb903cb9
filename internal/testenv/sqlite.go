package testenv

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/commercekit/commercekit/sqlitedb"
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
	db := bun.NewDB(sqldb, sqlitedb.Dialect())
	tb.Cleanup(func() {
		db.Close()
		keeper.Close()
	})
	return db
}

// SQLiteFileTwice returns two *bun.DB of one connection each on one SQLite file of the
// test's own (WAL journal, the busy timeout given), as two processes sharing the file
// open it: a write transaction open on one makes the other's writes wait the busy
// timeout, then fail with SQLITE_BUSY. Both are closed when the test ends.
func SQLiteFileTwice(tb testing.TB, busyTimeout time.Duration) (db, other *bun.DB) {
	tb.Helper()
	dsn := fmt.Sprintf("file:%s?_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)",
		filepath.Join(tb.TempDir(), "shared.db"), busyTimeout.Milliseconds())
	open := func() *bun.DB {
		sqldb, err := sql.Open(sqliteshim.ShimName, dsn)
		if err != nil {
			tb.Fatalf("testenv: opening SQLite: %v", err)
		}
		sqldb.SetMaxOpenConns(1)
		db := bun.NewDB(sqldb, sqlitedb.Dialect())
		tb.Cleanup(func() { _ = db.Close() })
		return db
	}
	return open(), open()
}
