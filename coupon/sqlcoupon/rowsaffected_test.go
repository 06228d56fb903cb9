package sqlcoupon_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/sqlitedb"
)

// uncounter fails, once armed, the RowsAffected of the first statement run whose text
// contains every one of its matches, with testkit.ErrConnReset: the statement ran, but
// how many rows it changed is lost with the connection.
type uncounter struct {
	mu     sync.Mutex
	match  []string
	failed string
}

// Arm makes u fail the count of the next statement containing every one of match.
func (u *uncounter) Arm(match ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.match, u.failed = match, ""
}

// Disarm stops failing counts and returns the statement whose count failed ("" for none).
func (u *uncounter) Disarm() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.match = nil
	return u.failed
}

// hit reports whether the count of query is to fail.
func (u *uncounter) hit(query string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.match == nil || u.failed != "" {
		return false
	}
	for _, m := range u.match {
		if !strings.Contains(query, m) {
			return false
		}
	}
	u.failed = query
	return true
}

// uncountedSQLite returns an in-memory SQLite database of the test's own, with the coupon
// schemas, whose statements' RowsAffected the returned uncounter fails.
func uncountedSQLite(t *testing.T) (*bun.DB, *uncounter) {
	t.Helper()
	dsn := "file:" + strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) +
		"-" + time.Now().Format("150405.000000000") + "?mode=memory&cache=shared&_foreign_keys=1"
	keeper, err := sql.Open(sqliteshim.ShimName, dsn) // keeps the database alive; its driver opens ours
	require.NoError(t, err)
	require.NoError(t, keeper.Ping())
	u := &uncounter{}
	sqldb := sql.OpenDB(uncountedConnector{keeper.Driver(), dsn, u})
	sqldb.SetMaxOpenConns(1)
	db := bun.NewDB(sqldb, sqlitedb.Dialect())
	t.Cleanup(func() {
		_ = db.Close()
		_ = keeper.Close()
	})
	ctx := context.Background()
	require.NoError(t, coupon.CreateSchema(ctx, db))
	require.NoError(t, sqlcoupon.CreateSchema(ctx, db))
	return db, u
}

type uncountedConnector struct {
	d   driver.Driver
	dsn string
	u   *uncounter
}

func (c uncountedConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.d.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return uncountedConn{conn, c.u}, nil
}

func (c uncountedConnector) Driver() driver.Driver { return c.d }

// uncountedConn passes every call to its driver's connection, failing the RowsAffected of
// the statement its uncounter picks.
type uncountedConn struct {
	driver.Conn
	u *uncounter
}

func (c uncountedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	res, err := c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
	if err != nil || !c.u.hit(query) {
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

func (uncountedResult) RowsAffected() (int64, error) { return 0, testkit.ErrConnReset }

// redeemable returns a Service on an uncounted database with one coupon issued to alice.
func redeemable(t *testing.T) (*coupon.Service, *uncounter, coupon.Coupon) {
	t.Helper()
	db, u := uncountedSQLite(t)
	svc := testkit.Must(coupon.New(db, sqlcoupon.New()))(t)
	_, err := svc.CreateTemplate(context.Background(), coupon.Template{ID: "tpl", PerUserLimit: 5, ValidDays: 7,
		Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 1000}})
	require.NoError(t, err)
	return svc, u, testkit.Must(svc.Issue(context.Background(), "tpl", "alice", "alice-1"))(t)
}

// TestReserveCountLost: a Reserve whose UPDATE of the coupon ran but whose count of rows
// changed is lost fails as the database being unavailable, not as the coupon not being
// available, and changes nothing: the coupon available, no redemption. Its retry
// reserves it.
func TestReserveCountLost(t *testing.T) {
	ctx := context.Background()
	svc, u, c := redeemable(t)
	u.Arm("UPDATE", "coupon_coupons")
	_, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 10_000)
	require.NotEmpty(t, u.Disarm(), "the coupon's UPDATE")
	requireUnavailable(t, err, coupon.ErrNotAvailable)

	assert.Equal(t, coupon.StateAvailable, testkit.Must(svc.Coupon(ctx, c.ID))(t).State)
	assert.Empty(t, testkit.Must(svc.Redemptions(ctx, "order-1"))(t))

	red, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 10_000)
	require.NoError(t, err)
	assert.Equal(t, coupon.RedemptionReserved, red.State)
	assert.Equal(t, coupon.StateReserved, testkit.Must(svc.Coupon(ctx, c.ID))(t).State)
}

// TestConfirmCouponCountLost: a ConfirmCoupon whose UPDATE of the redemption ran but whose
// count of rows changed is lost fails as the database being unavailable; it does not
// commit the redemption confirmed with its coupon still reserved. Its retry confirms both.
func TestConfirmCouponCountLost(t *testing.T) {
	ctx := context.Background()
	svc, u, c := redeemable(t)
	_, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 10_000)
	require.NoError(t, err)

	u.Arm("UPDATE", "coupon_redemptions")
	err = svc.ConfirmCoupon(ctx, "order-1", c.ID)
	require.NotEmpty(t, u.Disarm(), "the redemption's UPDATE")
	requireUnavailable(t, err, coupon.ErrRedemptionNotFound, coupon.ErrRedemptionClosed, coupon.ErrHoldExpired)

	reds := testkit.Must(svc.Redemptions(ctx, "order-1"))(t)
	require.Len(t, reds, 1)
	assert.Equal(t, coupon.RedemptionReserved, reds[0].State)
	assert.Equal(t, coupon.StateReserved, testkit.Must(svc.Coupon(ctx, c.ID))(t).State)

	require.NoError(t, svc.ConfirmCoupon(ctx, "order-1", c.ID))
	assert.Equal(t, coupon.RedemptionConfirmed, testkit.Must(svc.Redemptions(ctx, "order-1"))(t)[0].State)
	assert.Equal(t, coupon.StateUsed, testkit.Must(svc.Coupon(ctx, c.ID))(t).State)
}

// TestResolveCountLost: a Confirm, Restore or Release whose UPDATE of the coupon ran but
// whose count of rows changed is lost fails as the database being unavailable (not as a
// coupon its redemption does not match), changing nothing. The retry resolves it.
func TestResolveCountLost(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		call   func(s *coupon.Service) error
		red    coupon.RedemptionState
		coupon coupon.State
	}{
		{"Confirm", func(s *coupon.Service) error { _, err := s.Confirm(ctx, "order-1"); return err },
			coupon.RedemptionConfirmed, coupon.StateUsed},
		{"Restore", func(s *coupon.Service) error { _, err := s.Restore(ctx, "order-1"); return err },
			coupon.RedemptionRestored, coupon.StateAvailable},
		{"Release", func(s *coupon.Service) error { _, err := s.Release(ctx, "order-1"); return err },
			coupon.RedemptionRestored, coupon.StateAvailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			svc, u, cp := redeemable(t)
			_, err := svc.Reserve(ctx, cp.ID, "alice", "order-1", 10_000)
			require.NoError(t, err)

			u.Arm("UPDATE", "coupon_coupons")
			err = c.call(svc)
			require.NotEmpty(t, u.Disarm(), "the coupon's UPDATE")
			requireUnavailable(t, err)
			assert.Equal(t, coupon.RedemptionReserved, testkit.Must(svc.Redemptions(ctx, "order-1"))(t)[0].State)
			assert.Equal(t, coupon.StateReserved, testkit.Must(svc.Coupon(ctx, cp.ID))(t).State)

			require.NoError(t, c.call(svc))
			assert.Equal(t, c.red, testkit.Must(svc.Redemptions(ctx, "order-1"))(t)[0].State)
			assert.Equal(t, c.coupon, testkit.Must(svc.Coupon(ctx, cp.ID))(t).State)
		})
	}
}

// TestTakeCountLost: an Issue whose bump of the template's issued count ran but whose
// count of rows changed is lost fails as the database being unavailable, not as the
// template being sold out, and issues nothing. Its retry issues the coupon.
func TestTakeCountLost(t *testing.T) {
	ctx := context.Background()
	db, u := uncountedSQLite(t)
	svc := testkit.Must(coupon.New(db, sqlcoupon.New()))(t)
	_, err := svc.CreateTemplate(ctx, coupon.Template{ID: "tpl", PerUserLimit: 1, TotalQuantity: 10, ValidDays: 7,
		Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 1000}})
	require.NoError(t, err)

	u.Arm("UPDATE", "coupon_issue_counters")
	_, err = svc.Issue(ctx, "tpl", "alice", "alice-1")
	require.NotEmpty(t, u.Disarm(), "the counter's UPDATE")
	requireUnavailable(t, err, coupon.ErrSoldOut)
	assert.Equal(t, coupon.Stats{}, testkit.Must(svc.Stats(ctx, "tpl"))(t), "nothing issued")

	c, err := svc.Issue(ctx, "tpl", "alice", "alice-1")
	require.NoError(t, err)
	assert.Equal(t, int64(1), c.Place)
	assert.Equal(t, coupon.Stats{Taken: 1, Issued: 1}, testkit.Must(svc.Stats(ctx, "tpl"))(t))
}
