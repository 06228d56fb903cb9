// Package sqlitedb opens the embedded SQLite database the way commercekit's SQL backends
// need it: the bun SQLite dialect over the pure-Go driver, and a pool of exactly one
// connection. SQLite serialises writers anyway; one connection rules out SQLITE_BUSY. Code
// that holds a transaction must then do all its work through that transaction: a second
// statement on the *bun.DB waits for it.
//
// An in-memory database lives only as long as a connection to it, and database/sql drops
// the pool's connection now and then (when a transaction's context is cancelled, say): a
// private ":memory:" database is then gone. Keep data in a file, or open a shared-cache
// one ("file:name?mode=memory&cache=shared") and hold a connection of your own to it for
// as long as the data must live, as the examples' short runs need not.
//
// MySQL (or MariaDB) needs nothing of the kind: open it with bun's mysqldialect.
package sqlitedb

import (
	"database/sql"
	"fmt"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/sqliteshim"
)

// Open opens the SQLite database dsn, e.g. "file:shop.db" or, for a database that lives
// as long as the *bun.DB, "file:name?mode=memory&cache=shared". Close the DB when done.
func Open(dsn string) (*bun.DB, error) {
	sqldb, err := sql.Open(sqliteshim.ShimName, dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: opening %s: %w", dsn, err)
	}
	sqldb.SetMaxOpenConns(1)
	sqldb.SetMaxIdleConns(1)
	sqldb.SetConnMaxLifetime(0)
	return bun.NewDB(sqldb, sqlitedialect.New()), nil
}
