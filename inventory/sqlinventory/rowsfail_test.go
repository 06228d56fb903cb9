package sqlinventory_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
	"github.com/commercekit/commercekit/sqlitedb"
)

// rowsBreaker, once armed, breaks the result of the first query whose text contains every
// one of its matches: the query runs, and reading its first row fails with
// testkit.ErrConnReset, as when the connection is lost while the rows are on their way.
type rowsBreaker struct {
	mu     sync.Mutex
	match  []string
	failed string
}

// Arm makes r break the result of the next query containing every one of match.
func (r *rowsBreaker) Arm(match ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.match, r.failed = match, ""
}

// Disarm stops breaking results and returns the query whose result broke ("" for none).
func (r *rowsBreaker) Disarm() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.match = nil
	return r.failed
}

func (r *rowsBreaker) hit(query string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.match == nil || r.failed != "" {
		return false
	}
	for _, m := range r.match {
		if !strings.Contains(query, m) {
			return false
		}
	}
	r.failed = query
	return true
}

// brokenRowsSQLite returns an in-memory SQLite database of the test's own, with the
// inventory schema, whose query results the returned rowsBreaker breaks.
func brokenRowsSQLite(t *testing.T) (*bun.DB, *rowsBreaker) {
	t.Helper()
	dsn := "file:" + strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) +
		"-" + time.Now().Format("150405.000000000") + "?mode=memory&cache=shared"
	keeper, err := sql.Open(sqliteshim.ShimName, dsn) // keeps the database alive; its driver opens ours
	require.NoError(t, err)
	require.NoError(t, keeper.Ping())
	r := &rowsBreaker{}
	sqldb := sql.OpenDB(breakingConnector{keeper.Driver(), dsn, r})
	sqldb.SetMaxOpenConns(1)
	db := bun.NewDB(sqldb, sqlitedb.Dialect())
	t.Cleanup(func() {
		_ = db.Close()
		_ = keeper.Close()
	})
	require.NoError(t, sqlinventory.CreateSchema(context.Background(), db))
	return db, r
}

type breakingConnector struct {
	d   driver.Driver
	dsn string
	r   *rowsBreaker
}

func (c breakingConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.d.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return breakingConn{conn, c.r}, nil
}

func (c breakingConnector) Driver() driver.Driver { return c.d }

// breakingConn passes every call to its driver's connection, breaking the result of the
// query its rowsBreaker picks.
type breakingConn struct {
	driver.Conn
	r *rowsBreaker
}

func (c breakingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func (c breakingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	rows, err := c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
	if err != nil || !c.r.hit(query) {
		return rows, err
	}
	return brokenRows{rows}, nil
}

func (c breakingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

type brokenRows struct{ driver.Rows }

func (brokenRows) Next([]driver.Value) error { return testkit.ErrConnReset }

// TestReserveStockRowsLost: a Reserve (through the group commit) whose read of the stock
// rows it locks loses its connection while the rows arrive fails as the database being
// unavailable, not as unknown SKUs, and changes nothing: the stock as it was, no
// reservation. Its retry reserves.
func TestReserveStockRowsLost(t *testing.T) {
	ctx := context.Background()
	db, r := brokenRowsSQLite(t)
	inv := testkit.Must(inventory.New(sqlinventory.New(db)))(t)
	for _, sku := range []string{"a", "b"} {
		_, err := inv.SetStock(ctx, inventory.StockSetting{SKU: sku, OnHand: 10})
		require.NoError(t, err)
	}
	req := inventory.ReserveRequest{ID: "r1", Lines: []inventory.Line{{SKU: "a", Qty: 2}, {SKU: "b", Qty: 3}}, TTL: time.Hour}

	r.Arm("SELECT sku, available, buyer_limit FROM inventory_stock")
	_, err := inv.Reserve(ctx, req)
	require.NotEmpty(t, r.Disarm(), "the read of the stock rows")
	require.Error(t, err)
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	require.ErrorIs(t, err, syscall.ECONNRESET)
	require.NotErrorIs(t, err, inventory.ErrUnknownSKU)
	require.NotErrorIs(t, err, inventory.ErrInsufficientStock)

	_, err = inv.Get(ctx, "r1")
	require.ErrorIs(t, err, inventory.ErrReservationNotFound)
	for _, sku := range []string{"a", "b"} {
		st := testkit.Must(inv.Stock(ctx, sku))(t)
		assert.Equal(t, inventory.Stock{SKU: sku, OnHand: 10, Available: 10}, st, sku)
	}

	got, err := inv.Reserve(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, inventory.StateReserved, got.State)
	assert.Equal(t, int64(8), testkit.Must(inv.Stock(ctx, "a"))(t).Available)
	assert.Equal(t, int64(7), testkit.Must(inv.Stock(ctx, "b"))(t).Available)
}
