package commerce

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/commercekit/commercekit/sqlitedb"
)

// errRowsAffected is how the database of uncountedUpdates fails RowsAffected.
var errRowsAffected = errors.New("test: the count of rows affected is lost")

// uncountedUpdates returns an in-memory SQLite database of the test's own whose UPDATEs run
// but whose RowsAffected fails with errRowsAffected.
func uncountedUpdates(t *testing.T) *bun.DB {
	t.Helper()
	dsn := fmt.Sprintf("file:uncounted-%d?mode=memory&cache=shared", time.Now().UnixNano())
	keeper, err := sql.Open(sqliteshim.ShimName, dsn) // keeps the database alive; its driver opens ours
	require.NoError(t, err)
	require.NoError(t, keeper.Ping())
	sqldb := sql.OpenDB(uncountedConnector{keeper.Driver(), dsn})
	sqldb.SetMaxOpenConns(1)
	db := bun.NewDB(sqldb, sqlitedb.Dialect())
	t.Cleanup(func() {
		_ = db.Close()
		_ = keeper.Close()
	})
	return db
}

type uncountedConnector struct {
	d   driver.Driver
	dsn string
}

func (c uncountedConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.d.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return uncountedConn{conn}, nil
}

func (c uncountedConnector) Driver() driver.Driver { return c.d }

// uncountedConn passes every call to its driver's connection, failing the RowsAffected of
// an UPDATE's result.
type uncountedConn struct{ driver.Conn }

func (c uncountedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	res, err := c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
	if err != nil || !strings.HasPrefix(query, "UPDATE") {
		return res, err
	}
	return uncountedResult{res}, nil
}

func (c uncountedConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
}

func (c uncountedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

type uncountedResult struct{ driver.Result }

func (uncountedResult) RowsAffected() (int64, error) { return 0, errRowsAffected }

// TestFinishTopUpRowsAffectedFails: a top-up's final UPDATE whose count of rows affected
// cannot be read fails with that error: it is not errLostRace, which its callers take for
// another flow having moved the top-up, answering it as they then read it (a top-up still
// PAYING, after a completion that rolled back) with no error.
func TestFinishTopUpRowsAffectedFails(t *testing.T) {
	ctx := context.Background()
	db := uncountedUpdates(t)
	require.NoError(t, CreateSchema(ctx, db))
	row := &topUpRow{ID: "top_1", UserID: "user", IdemKey: "k", Amount: 1000, Method: "CARD", Status: TopUpPaying,
		PaymentID: "pay-top_1"}
	_, err := db.NewInsert().Model(row).Exec(ctx)
	require.NoError(t, err)

	s := &Service{cfg: settings{now: time.Now}}
	err = s.finishTopUp(ctx, db, row, TopUpFailed, "DECLINED")
	require.ErrorIs(t, err, errRowsAffected)
	require.NotErrorIs(t, err, errLostRace)
}
