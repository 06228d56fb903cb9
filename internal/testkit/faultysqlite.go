package testkit

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/commercekit/commercekit/sqlitedb"
)

// ResultFault is how a FaultySQLite database fails the result of a statement that ran.
type ResultFault int

const (
	// CountLost fails the statement's RowsAffected: it changed rows, but how many is lost.
	CountLost ResultFault = iota + 1
	// RowsLost fails the reading of the query's first row: the rows are lost on their way.
	RowsLost
)

// SQLiteFaults picks the statement whose result a FaultySQLite database fails.
type SQLiteFaults struct {
	mu     sync.Mutex
	fault  ResultFault
	match  []string
	failed string
}

// Arm makes f fail, with fault, the result of the next statement whose text contains every
// one of match.
func (f *SQLiteFaults) Arm(fault ResultFault, match ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault, f.match, f.failed = fault, match, ""
}

// Disarm stops failing results and returns the statement whose result failed since Arm ("" for none).
func (f *SQLiteFaults) Disarm() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.match = nil
	return f.failed
}

// hit reports whether the result of query is to fail with fault.
func (f *SQLiteFaults) hit(fault ResultFault, query string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.match == nil || f.failed != "" || f.fault != fault {
		return false
	}
	for _, m := range f.match {
		if !strings.Contains(query, m) {
			return false
		}
	}
	f.failed = query
	return true
}

// FaultySQLite returns an in-memory SQLite database of the test's own (one connection)
// whose driver, once armed, fails the result of one statement that ran, with
// ErrConnReset, as a connection lost at that moment would: what real drivers rarely let a
// test see, and database/sql reports all the same.
func FaultySQLite(t testing.TB) (*bun.DB, *SQLiteFaults) {
	t.Helper()
	dsn := "file:" + strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) +
		"-" + time.Now().Format("150405.000000000") + "?mode=memory&cache=shared&_foreign_keys=1"
	keeper, err := sql.Open(sqliteshim.ShimName, dsn) // keeps the database alive; its driver opens ours
	require.NoError(t, err)
	require.NoError(t, keeper.Ping())
	f := &SQLiteFaults{}
	sqldb := sql.OpenDB(faultyConnector{keeper.Driver(), dsn, f})
	sqldb.SetMaxOpenConns(1)
	db := bun.NewDB(sqldb, sqlitedb.Dialect())
	t.Cleanup(func() {
		_ = db.Close()
		_ = keeper.Close()
	})
	return db, f
}

type faultyConnector struct {
	d   driver.Driver
	dsn string
	f   *SQLiteFaults
}

func (c faultyConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.d.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return faultyConn{conn, c.f}, nil
}

func (c faultyConnector) Driver() driver.Driver { return c.d }

// faultyConn passes every call to its driver's connection, failing the result its
// SQLiteFaults picks.
type faultyConn struct {
	driver.Conn
	f *SQLiteFaults
}

func (c faultyConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	res, err := c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
	if err != nil || !c.f.hit(CountLost, query) {
		return res, err
	}
	return uncountedResult{res}, nil
}

func (c faultyConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	rows, err := c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
	if err != nil || !c.f.hit(RowsLost, query) {
		return rows, err
	}
	return lostRows{rows}, nil
}

func (c faultyConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

type uncountedResult struct{ driver.Result }

func (uncountedResult) RowsAffected() (int64, error) { return 0, ErrConnReset }

type lostRows struct{ driver.Rows }

func (lostRows) Next([]driver.Value) error { return ErrConnReset }
