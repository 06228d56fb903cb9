package sqlcoupon_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/internal/testkit"
)

// uncountedSQLite returns a testkit.FaultySQLite database with the coupon schemas, whose
// statements' RowsAffected the returned faults fail (testkit.CountLost).
func uncountedSQLite(t *testing.T) (*bun.DB, *testkit.SQLiteFaults) {
	t.Helper()
	db, f := testkit.FaultySQLite(t)
	ctx := context.Background()
	require.NoError(t, coupon.CreateSchema(ctx, db))
	require.NoError(t, sqlcoupon.CreateSchema(ctx, db))
	return db, f
}

// redeemable returns a Service on an uncounted database with one coupon issued to alice.
func redeemable(t *testing.T) (*coupon.Service, *testkit.SQLiteFaults, coupon.Coupon) {
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
	u.Arm(testkit.CountLost, "UPDATE", "coupon_coupons")
	_, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 10_000)
	require.NotEmpty(t, u.Disarm(), "the coupon's UPDATE")
	testkit.RequireConnReset(t, err, coupon.ErrNotAvailable)

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

	u.Arm(testkit.CountLost, "UPDATE", "coupon_redemptions")
	err = svc.ConfirmCoupon(ctx, "order-1", c.ID)
	require.NotEmpty(t, u.Disarm(), "the redemption's UPDATE")
	testkit.RequireConnReset(t, err, coupon.ErrRedemptionNotFound, coupon.ErrRedemptionClosed, coupon.ErrHoldExpired)

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

			u.Arm(testkit.CountLost, "UPDATE", "coupon_coupons")
			err = c.call(svc)
			require.NotEmpty(t, u.Disarm(), "the coupon's UPDATE")
			testkit.RequireConnReset(t, err)
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

	u.Arm(testkit.CountLost, "UPDATE", "coupon_issue_counters")
	_, err = svc.Issue(ctx, "tpl", "alice", "alice-1")
	require.NotEmpty(t, u.Disarm(), "the counter's UPDATE")
	testkit.RequireConnReset(t, err, coupon.ErrSoldOut)
	assert.Equal(t, coupon.Stats{}, testkit.Must(svc.Stats(ctx, "tpl"))(t), "nothing issued")

	c, err := svc.Issue(ctx, "tpl", "alice", "alice-1")
	require.NoError(t, err)
	assert.Equal(t, int64(1), c.Place)
	assert.Equal(t, coupon.Stats{Taken: 1, Issued: 1}, testkit.Must(svc.Stats(ctx, "tpl"))(t))
}
