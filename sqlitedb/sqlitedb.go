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
// Its dialect (Dialect) is bun's, but for strings holding a NUL byte: bun refuses them
// (the statement fails to parse, "unrecognized token"), so a lookup by an ID a hostile
// client sent failed as if the database were broken. Dialect writes them as SQLite reads
// them, and such a lookup finds nothing. (bun's MySQL dialect drops NUL bytes instead:
// there "a\x00b" is "ab". So commercekit's packages refuse control characters in what
// they key rows by, and the backends agree.)
//
// MySQL (or MariaDB) needs nothing of the kind: open it with bun's mysqldialect.
package sqlitedb

import (
	"database/sql"
	"fmt"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/sqliteshim"
	"github.com/uptrace/bun/schema"
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
	return bun.NewDB(sqldb, Dialect()), nil
}

// Dialect returns bun's SQLite dialect, writing a string that holds a NUL byte as an
// expression SQLite reads (the parts between NUL bytes joined by char(0)) rather than
// refusing it.
func Dialect() schema.Dialect { return nulDialect{sqlitedialect.New()} }

type nulDialect struct{ *sqlitedialect.Dialect }

func (d nulDialect) AppendString(b []byte, s string) []byte {
	if strings.IndexByte(s, 0) < 0 {
		return d.Dialect.AppendString(b, s)
	}
	b = append(b, '(')
	for i, part := range strings.Split(s, "\x00") {
		if i > 0 {
			b = append(b, " || char(0) || "...)
		}
		b = d.Dialect.AppendString(b, part)
	}
	return append(b, ')')
}
