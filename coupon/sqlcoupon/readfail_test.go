package sqlcoupon_test

import (
	"context"
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

// eachDB runs test on SQLite and on MySQL.
func eachDB(t *testing.T, test func(t *testing.T, db *bun.DB)) {
	for _, c := range []struct {
		name string
		open func(testing.TB) *bun.DB
	}{{"SQLite", testenv.SQLite}, {"MySQL", testenv.MySQL}} {
		t.Run(c.name, func(t *testing.T) {
			db := c.open(t)
			ctx := context.Background()
			require.NoError(t, coupon.CreateSchema(ctx, db))
			require.NoError(t, sqlcoupon.CreateSchema(ctx, db))
			test(t, db)
		})
	}
}

// TestIssueAfterWindowReadFails: the retry, after the issue window closed, of a request
// served inside it reads the coupon the request was issued; when that read fails, the
// retry fails as the database being unavailable, not as the window having ended (the
// request was served), and issues nothing. The next retry gets the coupon.
func TestIssueAfterWindowReadFails(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		start := time.Date(2030, 3, 1, 9, 0, 0, 0, time.UTC)
		clock := testclock.New(start)
		f := &testkit.FailStatement{}
		svc := testkit.Must(coupon.New(db.WithQueryHook(f), sqlcoupon.New(), coupon.WithClock(clock.Now)))(t)
		_, err := svc.CreateTemplate(ctx, coupon.Template{ID: "window", Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 1000},
			IssueStart: start, IssueEnd: start.Add(time.Hour), TotalQuantity: 10, PerUserLimit: 1})
		require.NoError(t, err)
		c := testkit.Must(svc.Issue(ctx, "window", "alice", "req-1"))(t)
		clock.Advance(2 * time.Hour) // past the window

		f.Arm(1, "SELECT", "coupon_coupons")
		_, err = svc.Issue(ctx, "window", "alice", "req-1")
		require.NotEmpty(t, f.Disarm(), "the read of the request's coupon")
		testkit.RequireConnReset(t, err, coupon.ErrEnded, coupon.ErrNotStarted)

		st := testkit.Must(svc.Stats(ctx, "window"))(t)
		assert.Equal(t, coupon.Stats{Taken: 1, Issued: 1}, st, "nothing more issued")

		got, err := svc.Issue(ctx, "window", "alice", "req-1")
		require.NoError(t, err)
		assert.Equal(t, c.ID, got.ID)
		_, err = svc.Issue(ctx, "window", "bob", "req-2")
		require.ErrorIs(t, err, coupon.ErrEnded, "a new request is refused")
	})
}
