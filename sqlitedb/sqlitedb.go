// Package sqlitedb opens the embedded SQLite database the way commercekit's SQL backends
// need it: the bun SQLite dialect over the pure-Go driver, and a pool of exactly one
// connection. SQLite serialises writers anyway; one connection rules out SQLITE_BUSY and
// keeps an in-memory database alive while it is open. Code that holds a transaction must
// then do all its work through that transaction: a second statement on the *bun.DB waits
// for it.
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
