package coupontest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

// redeemFixture is a fixture with one 10%-off coupon (cap 5,000, minimum 20,000, expiring
// after 7 days) issued to alice.
func redeemFixture(t *testing.T, h Harness) (*fixture, coupon.Coupon) {
	f := open(t, h)
	tpl := f.template(t, coupon.Template{
		ID: "ten", PerUserLimit: 5, ValidDays: 7,
		Terms: coupon.Terms{Kind: coupon.PercentOff, Percent: 10, MaxDiscount: 5000, MinOrderAmount: 20000},
	})
	return f, f.issue(t, tpl.ID, "alice", "alice-1")
}

// requireRedeemError checks err is a *RedeemError wrapping want and returns it.
func requireRedeemError(t *testing.T, err, want error) *coupon.RedeemError {
	t.Helper()
	require.ErrorIs(t, err, want)
	var re *coupon.RedeemError
	require.ErrorAs(t, err, &re)
	return re
}

// requireUntouched checks the coupon is available and order holds nothing.
func (f *fixture) requireUntouched(t *testing.T, couponID, orderID string) {
	t.Helper()
	c := f.coupon(t, couponID)
	require.Equal(t, coupon.StateAvailable, c.State)
	require.Empty(t, c.OrderID)
	require.Empty(t, f.redemptions(t, orderID))
}

func testRedemption(t *testing.T, h Harness) {
	ctx := context.Background()

	t.Run("ReserveConfirm", func(t *testing.T) {
		f, c := redeemFixture(t, h)
		svc := f.Service
		red, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 31_999)
		require.NoError(t, err)
		want := coupon.Redemption{
			OrderID: "order-1", CouponID: c.ID, UserID: "alice", TemplateID: "ten",
			OrderAmount: 31_999, Discount: 3_199, State: coupon.RedemptionReserved, ReservedAt: start,
		}
		assert.Equal(t, want, red, "10% of 31,999 rounds down")
		assert.Equal(t, []coupon.Redemption{want}, f.redemptions(t, "order-1"))
		held := f.coupon(t, c.ID)
		assert.Equal(t, coupon.StateReserved, held.State)
		assert.Equal(t, "order-1", held.OrderID)

		again, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 31_999)
		require.NoError(t, err, "Reserve is idempotent")
		assert.Equal(t, want, again)
		re := requireRedeemError(t, ignore(svc.Reserve(ctx, c.ID, "alice", "order-1", 40_000)), coupon.ErrRedemptionConflict)
		assert.EqualValues(t, 31_999, re.OrderAmount)
		re = requireRedeemError(t, ignore(svc.Reserve(ctx, c.ID, "alice", "order-2", 50_000)), coupon.ErrNotAvailable)
		assert.Equal(t, "reserved", re.State)

		f.clock.Advance(time.Minute)
		reds, err := svc.Confirm(ctx, "order-1")
		require.NoError(t, err)
		want.State, want.ResolvedAt = coupon.RedemptionConfirmed, start.Add(time.Minute)
		assert.Equal(t, []coupon.Redemption{want}, reds)
		used := f.coupon(t, c.ID)
		assert.Equal(t, coupon.StateUsed, used.State)
		assert.Equal(t, start.Add(time.Minute), used.UsedAt)

		f.clock.Advance(time.Minute)
		reds, err = svc.Confirm(ctx, "order-1")
		require.NoError(t, err, "Confirm is idempotent")
		assert.Equal(t, []coupon.Redemption{want}, reds)
		again, err = svc.Reserve(ctx, c.ID, "alice", "order-1", 31_999)
		require.NoError(t, err, "reserving for the order that used it returns the redemption")
		assert.Equal(t, want, again)
		re = requireRedeemError(t, ignore(svc.Reserve(ctx, c.ID, "alice", "order-2", 50_000)), coupon.ErrNotAvailable)
		assert.Equal(t, "used", re.State)
		requireRedeemError(t, ignore(svc.Confirm(ctx, "order-none")), coupon.ErrRedemptionNotFound)
		requireRedeemError(t, ignore(svc.Restore(ctx, "order-none")), coupon.ErrRedemptionNotFound)
	})

	t.Run("ConfirmCoupon", func(t *testing.T) {
		f, c := redeemFixture(t, h)
		other := f.issue(t, "ten", "alice", "alice-2")
		svc := f.Service
		_, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 31_999, coupon.HoldUntil(start.Add(time.Hour)))
		require.NoError(t, err)
		requireRedeemError(t, svc.ConfirmCoupon(ctx, "order-1", other.ID), coupon.ErrRedemptionNotFound)
		requireRedeemError(t, svc.ConfirmCoupon(ctx, "order-none", c.ID), coupon.ErrRedemptionNotFound)
		require.ErrorIs(t, svc.ConfirmCoupon(ctx, "order-1", ""), coupon.ErrInvalidArgument)
		held := f.redemptions(t, "order-1")

		f.clock.Advance(time.Minute)
		require.NoError(t, svc.ConfirmCoupon(ctx, "order-1", c.ID))
		want := held[0]
		want.State, want.ResolvedAt = coupon.RedemptionConfirmed, start.Add(time.Minute)
		assert.Equal(t, []coupon.Redemption{want}, f.redemptions(t, "order-1"), "as Confirm leaves it")
		used := f.coupon(t, c.ID)
		assert.Equal(t, coupon.StateUsed, used.State)
		assert.Equal(t, "order-1", used.OrderID)
		assert.Equal(t, start.Add(time.Minute), used.UsedAt)

		f.clock.Advance(2 * time.Hour)
		require.NoError(t, svc.ConfirmCoupon(ctx, "order-1", c.ID), "ConfirmCoupon is idempotent, past the deadline too")
		reds, err := svc.Confirm(ctx, "order-1")
		require.NoError(t, err)
		assert.Equal(t, []coupon.Redemption{want}, reds, "nothing moved again")
		assert.Equal(t, used, f.coupon(t, c.ID))

		_, err = svc.Restore(ctx, "order-1")
		require.NoError(t, err)
		re := requireRedeemError(t, svc.ConfirmCoupon(ctx, "order-1", c.ID), coupon.ErrRedemptionClosed)
		assert.Equal(t, "restored", re.State)
		f.requireUntouched(t, c.ID, "order-2")
	})

	// The database drops the connection between ConfirmCoupon's two updates (the
	// redemption's, then the coupon's), in a caller's transaction: nothing moves, and the
	// retry confirms once.
	t.Run("ConfirmCouponCrash", func(t *testing.T) {
		f, c := redeemFixture(t, h)
		if sqlutil.IsSQLite(f.DB) {
			return // the fault is a killed server connection
		}
		_, err := f.Service.Reserve(ctx, c.ID, "alice", "order-1", 31_999)
		require.NoError(t, err)
		held := f.redemptions(t, "order-1")
		tx, err := testenv.KillBefore(t, f.DB, "UPDATE `coupon_coupons`").BeginTx(ctx, nil)
		require.NoError(t, err)
		err = f.Service.WithTx(tx).ConfirmCoupon(ctx, "order-1", c.ID)
		require.ErrorIs(t, err, errcode.ErrUnavailable)
		require.Error(t, tx.Rollback(), "the server already rolled it back")
		assert.Equal(t, held, f.redemptions(t, "order-1"), "still held")
		assert.Equal(t, coupon.StateReserved, f.coupon(t, c.ID).State)

		require.NoError(t, f.Service.ConfirmCoupon(ctx, "order-1", c.ID))
		require.NoError(t, f.Service.ConfirmCoupon(ctx, "order-1", c.ID))
		assert.Equal(t, coupon.RedemptionConfirmed, f.redemptions(t, "order-1")[0].State)
		assert.Equal(t, coupon.StateUsed, f.coupon(t, c.ID).State)
	})

	t.Run("ConfirmCouponPastDeadline", func(t *testing.T) {
		f, c := redeemFixture(t, h)
		svc := f.Service
		_, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 30_000, coupon.HoldUntil(start.Add(10*time.Minute)))
		require.NoError(t, err)
		held := f.redemptions(t, "order-1")
		f.clock.Advance(10 * time.Minute)
		re := requireRedeemError(t, svc.ConfirmCoupon(ctx, "order-1", c.ID), coupon.ErrHoldExpired)
		assert.Equal(t, start.Add(10*time.Minute), re.At)
		assert.Equal(t, held, f.redemptions(t, "order-1"), "a refused ConfirmCoupon changes nothing")
		assert.Equal(t, coupon.StateReserved, f.coupon(t, c.ID).State)

		n, err := svc.Sweep(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		re = requireRedeemError(t, svc.ConfirmCoupon(ctx, "order-1", c.ID), coupon.ErrHoldExpired)
		assert.Equal(t, "expired", re.State)
		f.requireUntouched(t, c.ID, "order-2")
	})

	t.Run("ReserveRestore", func(t *testing.T) {
		f, c := redeemFixture(t, h)
		svc := f.Service
		_, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 30_000)
		require.NoError(t, err)
		f.clock.Advance(time.Minute)
		reds, err := svc.Restore(ctx, "order-1")
		require.NoError(t, err)
		require.Len(t, reds, 1)
		assert.Equal(t, coupon.RedemptionRestored, reds[0].State)
		assert.Equal(t, start.Add(time.Minute), reds[0].ResolvedAt)
		f.requireUntouched(t, c.ID, "order-2")

		f.clock.Advance(time.Minute)
		again, err := svc.Restore(ctx, "order-1")
		require.NoError(t, err, "Restore is idempotent")
		assert.Equal(t, reds, again)
		re := requireRedeemError(t, ignore(svc.Reserve(ctx, c.ID, "alice", "order-1", 30_000)), coupon.ErrRedemptionClosed)
		assert.Equal(t, "restored", re.State)
		requireRedeemError(t, ignore(svc.Confirm(ctx, "order-1")), coupon.ErrRedemptionClosed)

		red, err := svc.Reserve(ctx, c.ID, "alice", "order-2", 80_000)
		require.NoError(t, err, "a restored coupon is usable again")
		assert.EqualValues(t, 5000, red.Discount, "the cap holds")
	})

	t.Run("RestoreAfterConfirm", func(t *testing.T) {
		f, c := redeemFixture(t, h)
		svc := f.Service
		_, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 30_000)
		require.NoError(t, err)
		_, err = svc.Confirm(ctx, "order-1")
		require.NoError(t, err)
		reds, err := svc.Restore(ctx, "order-1")
		require.NoError(t, err, "a cancelled order gives its coupon back")
		assert.Equal(t, coupon.RedemptionRestored, reds[0].State)
		back := f.coupon(t, c.ID)
		assert.Equal(t, coupon.StateAvailable, back.State)
		assert.True(t, back.UsedAt.IsZero())
		_, err = svc.Reserve(ctx, c.ID, "alice", "order-2", 30_000)
		require.NoError(t, err)
	})

	t.Run("RestoreAfterExpiry", func(t *testing.T) {
		f, c := redeemFixture(t, h)
		svc := f.Service
		_, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 30_000)
		require.NoError(t, err)
		f.clock.Advance(8 * 24 * time.Hour)
		assert.Equal(t, coupon.StateReserved, f.coupon(t, c.ID).State, "a reserved coupon stays reserved past its expiry")
		_, err = svc.Restore(ctx, "order-1")
		require.NoError(t, err)
		assert.Equal(t, coupon.StateExpired, f.coupon(t, c.ID).State, "restored after its use-by date, it is expired")
		re := requireRedeemError(t, ignore(svc.Reserve(ctx, c.ID, "alice", "order-2", 30_000)), coupon.ErrExpired)
		assert.Equal(t, c.ExpiresAt, re.At)
	})

	t.Run("SeveralCouponsPerOrder", func(t *testing.T) {
		f, c1 := redeemFixture(t, h)
		c2 := f.issue(t, "ten", "alice", "alice-2")
		svc := f.Service
		for _, c := range []coupon.Coupon{c1, c2} {
			_, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 30_000)
			require.NoError(t, err)
		}
		reds, err := svc.Confirm(ctx, "order-1")
		require.NoError(t, err)
		require.Len(t, reds, 2)
		for _, c := range []coupon.Coupon{c1, c2} {
			assert.Equal(t, coupon.StateUsed, f.coupon(t, c.ID).State)
		}
		_, err = svc.Restore(ctx, "order-1")
		require.NoError(t, err)
		for _, c := range []coupon.Coupon{c1, c2} {
			assert.Equal(t, coupon.StateAvailable, f.coupon(t, c.ID).State)
		}
	})

	t.Run("Rejections", func(t *testing.T) {
		f, c := redeemFixture(t, h)
		svc := f.Service
		later := f.template(t, coupon.Template{ID: "later", UsableFrom: start.Add(time.Hour)})
		notYet := f.issue(t, later.ID, "alice", "alice-later")

		re := requireRedeemError(t, ignore(svc.Reserve(ctx, "no-such-coupon", "alice", "order-1", 30_000)), coupon.ErrCouponNotFound)
		assert.Equal(t, "no-such-coupon", re.CouponID)
		requireRedeemError(t, ignore(svc.Reserve(ctx, c.ID, "mallory", "order-1", 30_000)), coupon.ErrNotOwner)
		re = requireRedeemError(t, ignore(svc.Reserve(ctx, c.ID, "alice", "order-1", 19_999)), coupon.ErrBelowMinimum)
		assert.EqualValues(t, 20_000, re.MinOrderAmount)
		assert.EqualValues(t, 19_999, re.OrderAmount)
		re = requireRedeemError(t, ignore(svc.Reserve(ctx, notYet.ID, "alice", "order-1", 30_000)), coupon.ErrNotYetUsable)
		assert.Equal(t, start.Add(time.Hour), re.At)
		f.requireUntouched(t, c.ID, "order-1")
		f.requireUntouched(t, notYet.ID, "order-1")

		for _, args := range []struct {
			coupon, user, order string
			amount              int64
		}{
			{"", "alice", "o", 1}, {c.ID, "", "o", 1}, {c.ID, "alice", "", 1}, {c.ID, "alice", "o", 0}, {c.ID, "alice", "o", -5},
		} {
			_, err := svc.Reserve(ctx, args.coupon, args.user, args.order, args.amount)
			assert.ErrorIs(t, err, coupon.ErrInvalidArgument, "%+v", args)
		}
		_, err := svc.Confirm(ctx, "")
		assert.ErrorIs(t, err, coupon.ErrInvalidArgument)
		_, err = svc.Restore(ctx, "")
		assert.ErrorIs(t, err, coupon.ErrInvalidArgument)
		_, err = svc.Coupon(ctx, "no-such-coupon")
		assert.ErrorIs(t, err, coupon.ErrCouponNotFound)

		f.clock.Advance(7 * 24 * time.Hour)
		requireRedeemError(t, ignore(svc.Reserve(ctx, c.ID, "alice", "order-1", 30_000)), coupon.ErrExpired)
		f.clock.Advance(-time.Microsecond)
		_, err = svc.Reserve(ctx, c.ID, "alice", "order-1", 30_000)
		require.NoError(t, err, "usable until the last microsecond before ExpiresAt")
	})
}

func testHoldDeadline(t *testing.T, h Harness) {
	ctx := context.Background()

	t.Run("Sweep", func(t *testing.T) {
		f, c := redeemFixture(t, h)
		other := f.issue(t, "ten", "alice", "alice-2")
		svc := f.Service
		_, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 30_000, coupon.HoldUntil(start))
		require.ErrorIs(t, err, coupon.ErrInvalidArgument, "a deadline must be in the future")
		// 9999-12-31T23:00-10:00 is year 10000 in UTC: no column takes it (SQLite would store
		// a row no read, nor Sweep, could scan again).
		for _, past := range []time.Time{time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("-10", -10*3600)), time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)} {
			_, err = svc.Reserve(ctx, c.ID, "alice", "order-1", 30_000, coupon.HoldUntil(past))
			require.ErrorIs(t, err, coupon.ErrInvalidArgument, "a deadline past year 9999 in UTC")
		}
		assert.Empty(t, f.redemptions(t, "order-1"), "a refused Reserve records nothing")
		red, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 30_000, coupon.HoldUntil(start.Add(10*time.Minute)))
		require.NoError(t, err)
		assert.Equal(t, start.Add(10*time.Minute), red.HoldDeadline)
		_, err = svc.Reserve(ctx, other.ID, "alice", "order-2", 30_000) // no deadline
		require.NoError(t, err)

		n, err := svc.Sweep(ctx)
		require.NoError(t, err)
		assert.Zero(t, n, "nothing is due yet")

		f.clock.Advance(10 * time.Minute)
		re := requireRedeemError(t, ignore(svc.Confirm(ctx, "order-1")), coupon.ErrHoldExpired)
		assert.Equal(t, start.Add(10*time.Minute), re.At)
		assert.Equal(t, coupon.StateReserved, f.coupon(t, c.ID).State, "a refused Confirm changes nothing")

		n, err = svc.Sweep(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		assert.Equal(t, coupon.StateAvailable, f.coupon(t, c.ID).State)
		assert.Equal(t, coupon.StateReserved, f.coupon(t, other.ID).State, "a hold without deadline stays")
		reds := f.redemptions(t, "order-1")
		require.Len(t, reds, 1)
		assert.Equal(t, coupon.RedemptionExpired, reds[0].State)

		requireRedeemError(t, ignore(svc.Confirm(ctx, "order-1")), coupon.ErrHoldExpired)
		again, err := svc.Restore(ctx, "order-1")
		require.NoError(t, err, "restoring an expired hold is a no-op")
		assert.Equal(t, reds, again)
		n, err = svc.Sweep(ctx)
		require.NoError(t, err)
		assert.Zero(t, n)
		_, err = svc.Reserve(ctx, c.ID, "alice", "order-3", 30_000)
		require.NoError(t, err, "the swept coupon is usable again")
	})

	t.Run("Run", func(t *testing.T) {
		f, c := redeemFixture(t, h)
		_, err := f.Service.Reserve(ctx, c.ID, "alice", "order-1", 30_000, coupon.HoldUntil(start.Add(time.Minute)))
		require.NoError(t, err)
		f.clock.Advance(time.Minute)

		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- f.Service.Run(runCtx, 5*time.Millisecond) }()
		require.Eventually(t, func() bool {
			got, err := f.Service.Coupon(ctx, c.ID)
			return err == nil && got.State == coupon.StateAvailable
		}, 30*time.Second, 5*time.Millisecond, "Run sweeps the expired hold")
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "Run stops cleanly when its context is cancelled")
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not stop")
		}
		assert.ErrorIs(t, f.Service.Run(ctx, 0), coupon.ErrInvalidArgument)
	})
}

func testRedemptionInCallerTx(t *testing.T, h Harness) {
	ctx := context.Background()
	f, c := redeemFixture(t, h)
	rollback := errors.New("rollback")

	err := f.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		svc := f.Service.WithTx(tx)
		_, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 30_000)
		require.NoError(t, err)
		held, err := svc.Coupon(ctx, c.ID)
		require.NoError(t, err)
		assert.Equal(t, coupon.StateReserved, held.State, "visible inside the transaction")
		return rollback
	})
	require.ErrorIs(t, err, rollback)
	f.requireUntouched(t, c.ID, "order-1")

	require.NoError(t, f.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		svc := f.Service.WithTx(tx)
		_, err := svc.Reserve(ctx, c.ID, "mallory", "order-1", 30_000)
		require.ErrorIs(t, err, coupon.ErrNotOwner)
		_, err = svc.Reserve(ctx, c.ID, "alice", "order-1", 10)
		require.ErrorIs(t, err, coupon.ErrBelowMinimum, "a refused step leaves the caller's transaction usable")
		if _, err := svc.Reserve(ctx, c.ID, "alice", "order-1", 30_000); err != nil {
			return err
		}
		_, err = svc.Confirm(ctx, "order-1")
		return err
	}))
	assert.Equal(t, coupon.StateUsed, f.coupon(t, c.ID).State)

	err = f.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		_, err := f.Service.WithTx(tx).Restore(ctx, "order-1")
		require.NoError(t, err)
		return rollback
	})
	require.ErrorIs(t, err, rollback)
	assert.Equal(t, coupon.StateUsed, f.coupon(t, c.ID).State, "a rolled-back Restore restores nothing")
}

// ignore drops the value of a (value, error) pair.
func ignore[T any](_ T, err error) error { return err }

func testRedemptionRaces(t *testing.T, h Harness) {
	ctx := context.Background()

	t.Run("TwoOrdersOneCoupon", func(t *testing.T) {
		f := open(t, h)
		tpl := f.template(t, coupon.Template{ID: "contested", PerUserLimit: 1})
		const coupons = 30
		cs := make([]coupon.Coupon, coupons)
		for i := range cs {
			cs[i] = f.issue(t, tpl.ID, fmt.Sprint("user-", i), fmt.Sprint("req-", i))
		}
		errs := make([]error, 2*coupons)
		testkit.Together(2*coupons, func(i int) {
			c := cs[i/2]
			_, errs[i] = f.Service.Reserve(ctx, c.ID, c.UserID, fmt.Sprint("order-", i), 10_000)
		})
		for i, c := range cs {
			a, b := errs[2*i], errs[2*i+1]
			require.True(t, (a == nil) != (b == nil), "exactly one order wins coupon %d: %v / %v", i, a, b)
			loser, winner := a, 2*i+1
			if a == nil {
				loser, winner = b, 2*i
			}
			requireRedeemError(t, loser, coupon.ErrNotAvailable)
			got := f.coupon(t, c.ID)
			assert.Equal(t, coupon.StateReserved, got.State)
			assert.Equal(t, fmt.Sprint("order-", winner), got.OrderID)
			assert.Len(t, f.redemptions(t, fmt.Sprint("order-", winner)), 1)
			assert.Empty(t, f.redemptions(t, fmt.Sprint("order-", 4*i+1-winner)), "the loser holds nothing")
		}
	})

	t.Run("ManyOrdersOneCoupon", func(t *testing.T) {
		f, c := redeemFixture(t, h)
		const n = 20
		errs := make([]error, n)
		testkit.Together(n, func(i int) {
			_, errs[i] = f.Service.Reserve(ctx, c.ID, "alice", fmt.Sprint("order-", i), 30_000)
		})
		wins := 0
		for _, err := range errs {
			if err == nil {
				wins++
			} else {
				requireRedeemError(t, err, coupon.ErrNotAvailable)
			}
		}
		assert.Equal(t, 1, wins)
	})

	t.Run("SameOrderConcurrently", func(t *testing.T) {
		f, c := redeemFixture(t, h)
		const n = 20
		reds := make([]coupon.Redemption, n)
		errs := make([]error, n)
		testkit.Together(n, func(i int) {
			reds[i], errs[i] = f.Service.Reserve(ctx, c.ID, "alice", "order-1", 30_000)
		})
		for i := range n {
			require.NoError(t, errs[i])
			assert.Equal(t, reds[0], reds[i])
		}
		assert.Len(t, f.redemptions(t, "order-1"), 1)

		testkit.Together(n, func(i int) {
			if i%2 == 0 {
				_, errs[i] = f.Service.Confirm(ctx, "order-1")
			} else {
				errs[i] = f.Service.ConfirmCoupon(ctx, "order-1", c.ID)
			}
		})
		for _, err := range errs {
			require.NoError(t, err)
		}
		assert.Equal(t, coupon.StateUsed, f.coupon(t, c.ID).State)
		reds = f.redemptions(t, "order-1")
		require.Len(t, reds, 1)
		assert.Equal(t, coupon.RedemptionConfirmed, reds[0].State)
		testkit.Together(n, func(i int) { _, errs[i] = f.Service.Restore(ctx, "order-1") })
		for _, err := range errs {
			require.NoError(t, err)
		}
		assert.Equal(t, coupon.StateAvailable, f.coupon(t, c.ID).State)
	})

	t.Run("ConfirmRacesRestore", func(t *testing.T) { testConfirmRacesRestore(t, h, false) })
	t.Run("ConfirmCouponRacesRestore", func(t *testing.T) { testConfirmRacesRestore(t, h, true) })
}

// testConfirmRacesRestore races Confirm (ConfirmCoupon when one) and Restore of each of
// many orders: Restore always wins in the end.
func testConfirmRacesRestore(t *testing.T, h Harness, one bool) {
	ctx := context.Background()
	f := open(t, h)
	tpl := f.template(t, coupon.Template{ID: "racy"})
	const orders = 20
	cs := make([]coupon.Coupon, orders)
	for i := range cs {
		cs[i] = f.issue(t, tpl.ID, fmt.Sprint("user-", i), fmt.Sprint("req-", i))
		_, err := f.Service.Reserve(ctx, cs[i].ID, cs[i].UserID, fmt.Sprint("order-", i), 5000)
		require.NoError(t, err)
	}
	errs := make([]error, 2*orders)
	testkit.Together(2*orders, func(i int) {
		if i%2 == 0 {
			if one {
				errs[i] = f.Service.ConfirmCoupon(ctx, fmt.Sprint("order-", i/2), cs[i/2].ID)
			} else {
				_, errs[i] = f.Service.Confirm(ctx, fmt.Sprint("order-", i/2))
			}
		} else {
			_, errs[i] = f.Service.Restore(ctx, fmt.Sprint("order-", i/2))
		}
	})
	for i, c := range cs {
		require.NoError(t, errs[2*i+1], "Restore always succeeds")
		reds := f.redemptions(t, fmt.Sprint("order-", i))
		require.Len(t, reds, 1)
		assert.Equal(t, coupon.RedemptionRestored, reds[0].State, "Restore came last either way")
		assert.Equal(t, coupon.StateAvailable, f.coupon(t, c.ID).State)
		if confirmErr := errs[2*i]; confirmErr != nil {
			requireRedeemError(t, confirmErr, coupon.ErrRedemptionClosed)
		}
	}
}

// testRedemptionLocks checks, on MySQL, that a redemption step in the caller's transaction
// (checkout confirms the coupon in the transaction that marks the order paid, and gives it
// back in the one that cancels it) locks only its own order's rows: another user's
// Reserve, or an Issue, run meanwhile on a connection that waits at most one second for a
// lock (lockProbe) does not wait for that transaction, whether the redemptions table is
// young or holds a crowd of reservations. Steps refused because what they name does not
// exist lock nothing either; and a Restore in a transaction whose snapshot is older than
// the reservation still restores it.
func testRedemptionLocks(t *testing.T, h Harness) {
	if sqlutil.IsSQLite(open(t, h).DB) {
		t.Log("SQLite has no row locks: a write transaction excludes every other writer")
		return
	}
	ctx := context.Background()
	steps := []struct {
		name      string
		confirmed bool // alice's order is confirmed before the step
		step      func(svc *coupon.Service, alice coupon.Coupon) error
		want      coupon.State
	}{
		{"ConfirmCoupon", false, func(svc *coupon.Service, alice coupon.Coupon) error {
			return svc.ConfirmCoupon(ctx, "order-a", alice.ID)
		}, coupon.StateUsed},
		{"Confirm", false, func(svc *coupon.Service, _ coupon.Coupon) error {
			return ignore(svc.Confirm(ctx, "order-a"))
		}, coupon.StateUsed},
		{"Release", false, func(svc *coupon.Service, _ coupon.Coupon) error {
			return ignore(svc.Release(ctx, "order-a"))
		}, coupon.StateAvailable},
		{"Restore", true, func(svc *coupon.Service, _ coupon.Coupon) error {
			return ignore(svc.Restore(ctx, "order-a"))
		}, coupon.StateAvailable},
		{"Restore of an order that reserved nothing", false, func(svc *coupon.Service, _ coupon.Coupon) error {
			return refused(t, ignore(svc.Restore(ctx, "order-a0")), coupon.ErrRedemptionNotFound)
		}, coupon.StateReserved},
		{"ConfirmCoupon of an order that reserved nothing", false, func(svc *coupon.Service, alice coupon.Coupon) error {
			return refused(t, svc.ConfirmCoupon(ctx, "order-a0", alice.ID), coupon.ErrRedemptionNotFound)
		}, coupon.StateReserved},
	}
	for _, crowd := range []int{0, 200} {
		for _, tc := range steps {
			t.Run(fmt.Sprintf("%s/%d other reservations", tc.name, crowd), func(t *testing.T) {
				f := open(t, h)
				f.template(t, coupon.Template{ID: "t"})
				alice, bob := f.issue(t, "t", "alice", "req-alice"), f.issue(t, "t", "bob", "req-bob")
				require.NoError(t, f.reserve(f.Service, alice, "order-a"))
				if tc.confirmed {
					require.NoError(t, f.Service.ConfirmCoupon(ctx, "order-a", alice.ID))
				}
				f.crowd(t, crowd)

				tx := f.inTx(t, func(svc *coupon.Service) error { return tc.step(svc, alice) })
				err := f.lockProbe(t, func(svc *coupon.Service) error { return f.reserve(svc, bob, "order-b") })
				require.NoError(t, err, "bob's reservation waited for alice's transaction")
				require.NoError(t, tx.Commit())

				assert.Equal(t, tc.want, f.coupon(t, alice.ID).State)
				got := f.coupon(t, bob.ID)
				assert.Equal(t, coupon.StateReserved, got.State)
				assert.Equal(t, "order-b", got.OrderID)
			})
		}
	}

	t.Run("Reserve of an unknown coupon", func(t *testing.T) {
		f := open(t, h)
		f.template(t, coupon.Template{ID: "t"})
		f.issue(t, "t", "alice", "req-alice")
		tx := f.inTx(t, func(svc *coupon.Service) error {
			return refused(t, ignore(svc.Reserve(ctx, "no-such-coupon", "mallory", "order-m", 10_000)), coupon.ErrCouponNotFound)
		})
		for _, user := range []string{"bob", "carol", "dave", "erin"} {
			err := f.lockProbe(t, func(svc *coupon.Service) error { return ignore(svc.Issue(ctx, "t", user, "req-"+user)) })
			require.NoError(t, err, "%s's coupon waited for mallory's transaction", user)
		}
		require.NoError(t, tx.Commit())
		assert.Equal(t, coupon.Stats{Taken: 5, Issued: 5}, f.stats(t, "t"))
	})

	t.Run("Restore in an older snapshot", func(t *testing.T) {
		f := open(t, h)
		f.template(t, coupon.Template{ID: "t"})
		alice := f.issue(t, "t", "alice", "req-alice")
		tx, err := f.DB.BeginTx(ctx, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback() })
		_, err = f.Service.WithTx(tx).Wallet(ctx, "alice", coupon.WalletQuery{}) // the snapshot is taken here
		require.NoError(t, err)
		require.NoError(t, f.reserve(f.Service, alice, "order-a"))

		reds, err := f.Service.WithTx(tx).Restore(ctx, "order-a")
		require.NoError(t, err)
		require.Len(t, reds, 1)
		assert.Equal(t, coupon.RedemptionRestored, reds[0].State)
		require.NoError(t, tx.Commit())
		assert.Equal(t, coupon.StateAvailable, f.coupon(t, alice.ID).State)
		assert.Equal(t, coupon.RedemptionRestored, f.redemptions(t, "order-a")[0].State)
	})
}

// reserve reserves c for order through svc with a hold deadline, as checkout does.
func (f *fixture) reserve(svc *coupon.Service, c coupon.Coupon, order string) error {
	return ignore(svc.Reserve(context.Background(), c.ID, c.UserID, order, 30_000, coupon.HoldUntil(f.clock.Now().Add(15*time.Minute))))
}

// crowd inserts n reserved redemptions of other orders (order-c000, order-c001, …, after
// alice's and bob's) held until an hour from now, and brings the table's statistics up to
// date, as during a busy sale.
func (f *fixture) crowd(t *testing.T, n int) {
	t.Helper()
	ctx, now := context.Background(), f.clock.Now()
	for i := range n {
		_, err := f.DB.ExecContext(ctx, "INSERT INTO coupon_redemptions (order_id, coupon_id, user_id, template_id, "+
			"order_amount, discount, state, hold_deadline, reserved_at) VALUES (?, ?, 'crowd', 't', 30000, 1000, ?, ?, ?)",
			fmt.Sprintf("order-c%03d", i), fmt.Sprintf("c%03d", i), coupon.RedemptionReserved, now.Add(time.Hour), now)
		require.NoError(t, err)
	}
	_, err := f.DB.ExecContext(ctx, "ANALYZE TABLE coupon_redemptions")
	require.NoError(t, err)
}

// inTx runs fn on the Service in a transaction it leaves open (rolled back at cleanup).
func (f *fixture) inTx(t *testing.T, fn func(svc *coupon.Service) error) bun.Tx {
	t.Helper()
	tx, err := f.DB.BeginTx(context.Background(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback() })
	require.NoError(t, fn(f.Service.WithTx(tx)))
	return tx
}

// lockProbe runs fn on the Service over a connection of its own that waits at most one
// second for a lock: an error says fn waited for a lock held elsewhere.
func (f *fixture) lockProbe(t *testing.T, fn func(svc *coupon.Service) error) error {
	t.Helper()
	return fn(f.Service.WithTx(testenv.ImpatientConn(t, f.DB)))
}

// refused returns nil when err is want (the step was refused as expected), else err.
func refused(t *testing.T, err, want error) error {
	if assert.ErrorIs(t, err, want) {
		return nil
	}
	return err
}
