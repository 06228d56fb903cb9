package coupon_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// lockEnv is a coupon Service on MySQL whose steps run in transactions the test holds open,
// and a probe that runs another step on a connection that waits at most one second for a
// lock.
type lockEnv struct {
	t     *testing.T
	ctx   context.Context
	db    *bun.DB
	svc   *coupon.Service
	clock *testclock.Clock
}

func newLockEnv(t *testing.T) *lockEnv {
	ctx := context.Background()
	db := testenv.MySQL(t)
	require.NoError(t, coupon.CreateSchema(ctx, db))
	require.NoError(t, sqlcoupon.CreateSchema(ctx, db))
	clock := testclock.New(time.Date(2030, 3, 1, 9, 0, 0, 0, time.UTC))
	svc := testkit.Must(coupon.New(db, sqlcoupon.New(), coupon.WithClock(clock.Now)))(t)
	_, err := svc.CreateTemplate(ctx, coupon.Template{ID: "t", Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 1000}})
	require.NoError(t, err)
	return &lockEnv{t: t, ctx: ctx, db: db, svc: svc, clock: clock}
}

func (e *lockEnv) issue(user string) coupon.Coupon {
	e.t.Helper()
	return testkit.Must(e.svc.Issue(e.ctx, "t", user, "req-"+user))(e.t)
}

// reserve reserves c for order with a hold deadline, as checkout does.
func (e *lockEnv) reserve(svc *coupon.Service, c coupon.Coupon, order string) error {
	_, err := svc.Reserve(e.ctx, c.ID, c.UserID, order, 10_000, coupon.HoldUntil(e.clock.Now().Add(15*time.Minute)))
	return err
}

// crowd inserts n reserved redemptions of other orders (order-c000, order-c001, …, after
// alice's and bob's) held until an hour from now, and brings the table's statistics up to
// date, as during a busy sale.
func (e *lockEnv) crowd(n int) {
	e.t.Helper()
	now := e.clock.Now()
	for i := range n {
		_, err := e.db.ExecContext(e.ctx, "INSERT INTO coupon_redemptions (order_id, coupon_id, user_id, template_id, "+
			"order_amount, discount, state, hold_deadline, reserved_at) VALUES (?, ?, 'crowd', 't', 10000, 1000, ?, ?, ?)",
			fmt.Sprintf("order-c%03d", i), fmt.Sprintf("c%03d", i), coupon.RedemptionReserved, now.Add(time.Hour), now)
		require.NoError(e.t, err)
	}
	_, err := e.db.ExecContext(e.ctx, "ANALYZE TABLE coupon_redemptions")
	require.NoError(e.t, err)
}

// inTx runs fn on the Service in a transaction it leaves open (rolled back at cleanup).
func (e *lockEnv) inTx(fn func(svc *coupon.Service) error) bun.Tx {
	e.t.Helper()
	tx, err := e.db.BeginTx(e.ctx, nil)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = tx.Rollback() })
	require.NoError(e.t, fn(e.svc.WithTx(tx)))
	return tx
}

// probe runs fn on a connection of its own that waits at most one second for a lock: an
// error says fn waited for a lock held elsewhere.
func (e *lockEnv) probe(fn func(svc *coupon.Service) error) error {
	e.t.Helper()
	conn, err := e.db.Conn(e.ctx)
	require.NoError(e.t, err)
	defer func() { _ = conn.Close() }()
	_, err = conn.ExecContext(e.ctx, "SET SESSION innodb_lock_wait_timeout = 1")
	require.NoError(e.t, err)
	return fn(e.svc.WithTx(conn))
}

// TestRedemptionLocksOnlyItsOrder: confirming, releasing or restoring alice's order in
// the caller's transaction (checkout confirms the coupon in the transaction that marks
// the order paid, and gives it back in the one that cancels it) locks alice's redemption
// and coupon only: bob's coupon reserved for the next order meanwhile does not wait for
// that transaction, whether the table is young or holds a crowd of reservations.
func TestRedemptionLocksOnlyItsOrder(t *testing.T) {
	steps := []struct {
		name      string
		confirmed bool // alice's order is confirmed before the step
		step      func(e *lockEnv, svc *coupon.Service, c coupon.Coupon) error
		want      coupon.State
	}{
		{"ConfirmCoupon", false, func(e *lockEnv, svc *coupon.Service, c coupon.Coupon) error {
			return svc.ConfirmCoupon(e.ctx, "order-a", c.ID)
		}, coupon.StateUsed},
		{"Confirm", false, func(e *lockEnv, svc *coupon.Service, _ coupon.Coupon) error {
			_, err := svc.Confirm(e.ctx, "order-a")
			return err
		}, coupon.StateUsed},
		{"Release", false, func(e *lockEnv, svc *coupon.Service, _ coupon.Coupon) error {
			_, err := svc.Release(e.ctx, "order-a")
			return err
		}, coupon.StateAvailable},
		{"Restore", true, func(e *lockEnv, svc *coupon.Service, _ coupon.Coupon) error {
			_, err := svc.Restore(e.ctx, "order-a")
			return err
		}, coupon.StateAvailable},
		{"Restore of an order that reserved nothing", false, func(e *lockEnv, svc *coupon.Service, _ coupon.Coupon) error {
			_, err := svc.Restore(e.ctx, "order-a0")
			return refused(e.t, err, coupon.ErrRedemptionNotFound)
		}, coupon.StateReserved},
	}
	for _, crowd := range []int{0, 200} {
		for _, tc := range steps {
			t.Run(fmt.Sprintf("%s/%d other reservations", tc.name, crowd), func(t *testing.T) {
				e := newLockEnv(t)
				alice, bob := e.issue("alice"), e.issue("bob")
				require.NoError(t, e.reserve(e.svc, alice, "order-a"))
				if tc.confirmed {
					require.NoError(t, e.svc.ConfirmCoupon(e.ctx, "order-a", alice.ID))
				}
				e.crowd(crowd)

				tx := e.inTx(func(svc *coupon.Service) error { return tc.step(e, svc, alice) })
				err := e.probe(func(svc *coupon.Service) error { return e.reserve(svc, bob, "order-b") })
				require.NoError(t, err, "bob's reservation waited for alice's transaction")
				require.NoError(t, tx.Commit())

				assert.Equal(t, tc.want, testkit.Must(e.svc.Coupon(e.ctx, alice.ID))(t).State)
				got := testkit.Must(e.svc.Coupon(e.ctx, bob.ID))(t)
				assert.Equal(t, coupon.StateReserved, got.State)
				assert.Equal(t, "order-b", got.OrderID)
			})
		}
	}
}

// TestRefusedStepsLockNothing: a step refused because what it names does not exist (a
// mistyped or forged ID, in the caller's transaction) locks no gap: a Reserve of an
// unknown coupon does not hold up coupons issued meanwhile, a ConfirmCoupon of an order
// that reserved nothing does not hold up another order's Reserve.
func TestRefusedStepsLockNothing(t *testing.T) {
	t.Run("Reserve", func(t *testing.T) {
		e := newLockEnv(t)
		e.issue("alice")
		tx := e.inTx(func(svc *coupon.Service) error {
			_, err := svc.Reserve(e.ctx, "no-such-coupon", "mallory", "order-m", 10_000)
			return refused(t, err, coupon.ErrCouponNotFound)
		})
		for _, user := range []string{"bob", "carol", "dave", "erin"} {
			err := e.probe(func(svc *coupon.Service) error {
				_, err := svc.Issue(e.ctx, "t", user, "req-"+user)
				return err
			})
			require.NoError(t, err, "%s's coupon waited for mallory's transaction", user)
		}
		require.NoError(t, tx.Commit())
		assert.Equal(t, coupon.Stats{Taken: 5, Issued: 5}, testkit.Must(e.svc.Stats(e.ctx, "t"))(t))
	})
	t.Run("ConfirmCoupon", func(t *testing.T) {
		e := newLockEnv(t)
		alice, bob := e.issue("alice"), e.issue("bob")
		tx := e.inTx(func(svc *coupon.Service) error {
			return refused(t, svc.ConfirmCoupon(e.ctx, "order-a", alice.ID), coupon.ErrRedemptionNotFound)
		})
		err := e.probe(func(svc *coupon.Service) error { return e.reserve(svc, bob, "order-b") })
		require.NoError(t, err, "bob's reservation waited for alice's transaction")
		require.NoError(t, tx.Commit())
		assert.Equal(t, coupon.StateAvailable, testkit.Must(e.svc.Coupon(e.ctx, alice.ID))(t).State)
		assert.Equal(t, coupon.StateReserved, testkit.Must(e.svc.Coupon(e.ctx, bob.ID))(t).State)
	})
}

// refused returns nil when err is want (the step was refused as expected), else err.
func refused(t *testing.T, err, want error) error {
	if assert.ErrorIs(t, err, want) {
		return nil
	}
	return err
}

// TestRestoreInOlderSnapshot: Restore through WithTx(tx) in a caller's transaction whose
// snapshot is older than the order's reservation still finds and restores it (the
// redemptions are listed with a plain read before they are locked by primary key).
func TestRestoreInOlderSnapshot(t *testing.T) {
	e := newLockEnv(t)
	alice := e.issue("alice")
	tx, err := e.db.BeginTx(e.ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback() })
	_, err = e.svc.WithTx(tx).Wallet(e.ctx, "alice", coupon.WalletQuery{}) // the snapshot is taken here
	require.NoError(t, err)
	require.NoError(t, e.reserve(e.svc, alice, "order-a"))

	reds, err := e.svc.WithTx(tx).Restore(e.ctx, "order-a")
	require.NoError(t, err)
	require.Len(t, reds, 1)
	assert.Equal(t, coupon.RedemptionRestored, reds[0].State)
	require.NoError(t, tx.Commit())
	assert.Equal(t, coupon.StateAvailable, testkit.Must(e.svc.Coupon(e.ctx, alice.ID))(t).State)
	assert.Equal(t, coupon.RedemptionRestored, testkit.Must(e.svc.Redemptions(e.ctx, "order-a"))(t)[0].State)
}
