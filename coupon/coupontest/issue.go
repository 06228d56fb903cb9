package coupontest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testkit"
)

func testIssue(t *testing.T, h Harness) {
	ctx := context.Background()
	day := 24 * time.Hour

	t.Run("Coupon", func(t *testing.T) {
		f := open(t, h)
		tpl := f.template(t, coupon.Template{
			ID: "spring", Name: "Spring sale",
			Terms:      coupon.Terms{Kind: coupon.PercentOff, Percent: 15, MaxDiscount: 7000, MinOrderAmount: 20000},
			UsableFrom: start.Add(day), ValidDays: 7,
		})
		c := f.issue(t, tpl.ID, "alice", "req-1")
		assert.Len(t, c.ID, 32)
		assert.Equal(t, coupon.Coupon{
			ID: c.ID, TemplateID: "spring", Name: "Spring sale", UserID: "alice", Ordinal: 1, RequestID: "req-1",
			Terms: tpl.Terms, State: coupon.StateAvailable,
			IssuedAt: start, UsableFrom: start.Add(day), ExpiresAt: start.Add(7 * day),
		}, c)
		assert.Equal(t, c, f.coupon(t, c.ID), "the coupon is durable as returned")
		assert.Equal(t, coupon.Stats{Taken: 1, Issued: 1}, f.stats(t, tpl.ID))
	})

	t.Run("Expiry", func(t *testing.T) {
		f := open(t, h)
		cases := []struct {
			name      string
			useBy     time.Time
			validDays int
			want      time.Time
		}{
			{"never", time.Time{}, 0, time.Time{}},
			{"days after issue", time.Time{}, 3, start.Add(3 * day)},
			{"absolute", start.Add(10 * day), 0, start.Add(10 * day)},
			{"absolute is earlier", start.Add(2 * day), 3, start.Add(2 * day)},
			{"days are earlier", start.Add(10 * day), 3, start.Add(3 * day)},
		}
		for i, tc := range cases {
			tpl := f.template(t, coupon.Template{ID: fmt.Sprint("exp-", i), UseBy: tc.useBy, ValidDays: tc.validDays})
			c := f.issue(t, tpl.ID, "alice", fmt.Sprint("req-exp-", i))
			assert.Equal(t, tc.want, c.ExpiresAt, tc.name)
		}
	})

	t.Run("Window", func(t *testing.T) {
		f := open(t, h)
		tpl := f.template(t, coupon.Template{ID: "window", IssueStart: start.Add(time.Hour), IssueEnd: start.Add(2 * time.Hour)})
		_, err := f.Service.Issue(ctx, tpl.ID, "alice", "early")
		require.ErrorIs(t, err, coupon.ErrNotStarted)
		var ie *coupon.IssueError
		require.ErrorAs(t, err, &ie)
		assert.Equal(t, start.Add(time.Hour), ie.At)
		assert.Equal(t, "alice", ie.UserID)

		f.clock.Advance(time.Hour)
		c := f.issue(t, tpl.ID, "alice", "on-time")

		f.clock.Advance(time.Hour)
		_, err = f.Service.Issue(ctx, tpl.ID, "bob", "late")
		require.ErrorIs(t, err, coupon.ErrEnded)
		again, err := f.Service.Issue(ctx, tpl.ID, "alice", "on-time")
		require.NoError(t, err, "a retry of a request served in the window gets its coupon after the window")
		assert.Equal(t, c.ID, again.ID)
		assert.Equal(t, coupon.Stats{Taken: 1, Issued: 1}, f.stats(t, tpl.ID))

		useBy := f.template(t, coupon.Template{ID: "use-by", UseBy: f.clock.Now().Add(time.Minute)})
		f.clock.Advance(time.Minute)
		_, err = f.Service.Issue(ctx, useBy.ID, "alice", "after-use-by")
		assert.ErrorIs(t, err, coupon.ErrEnded, "no coupon is issued already expired")
	})

	t.Run("InvalidArguments", func(t *testing.T) {
		f := open(t, h)
		tpl := f.template(t, coupon.Template{ID: "args"})
		long := strings.Repeat("x", 65)
		for _, args := range [][3]string{{"", "u", "r"}, {tpl.ID, "", "r"}, {tpl.ID, "u", ""}, {long, "u", "r"}, {tpl.ID, long, "r"}, {tpl.ID, "u", long}, {tpl.ID, "u", "\xff"}, {tpl.ID, "u\x00", "r"}, {tpl.ID, "u", "r\n"},
			// MySQL's collations ignore trailing spaces: "u " would be taken for "u".
			{tpl.ID + " ", "u", "r"}, {tpl.ID, "u ", "r"}, {tpl.ID, "u", "r "}} {
			_, err := f.Service.Issue(ctx, args[0], args[1], args[2])
			assert.ErrorIs(t, err, coupon.ErrInvalidArgument, "%q", args)
		}
		_, err := f.Service.Issue(ctx, "missing", "u", "r")
		assert.ErrorIs(t, err, coupon.ErrTemplateNotFound)
		assert.Equal(t, coupon.Stats{}, f.stats(t, tpl.ID))
	})

	t.Run("PerUserLimit", func(t *testing.T) {
		f := open(t, h)
		tpl := f.template(t, coupon.Template{ID: "three", PerUserLimit: 3})
		for i := 1; i <= 3; i++ {
			c := f.issue(t, tpl.ID, "alice", fmt.Sprint("a", i))
			assert.Equal(t, i, c.Ordinal)
		}
		_, err := f.Service.Issue(ctx, tpl.ID, "alice", "a4")
		require.ErrorIs(t, err, coupon.ErrLimitReached)
		var ie *coupon.IssueError
		require.ErrorAs(t, err, &ie)
		assert.Equal(t, 3, ie.Limit)
		assert.Equal(t, "coupon_limit_reached", errcode.ReasonOf(err))
		f.issue(t, tpl.ID, "bob", "b1")
		assert.Equal(t, coupon.Stats{Taken: 4, Issued: 4}, f.stats(t, tpl.ID))
		assert.Equal(t, 3, f.maxPerUser(t, tpl.ID))
	})

	t.Run("SoldOut", func(t *testing.T) {
		f := open(t, h)
		tpl := f.template(t, coupon.Template{ID: "few", TotalQuantity: 3})
		for i := range 3 {
			f.issue(t, tpl.ID, fmt.Sprint("user-", i), fmt.Sprint("req-", i))
		}
		_, err := f.Service.Issue(ctx, tpl.ID, "late", "req-late")
		require.ErrorIs(t, err, coupon.ErrSoldOut)
		var ie *coupon.IssueError
		require.ErrorAs(t, err, &ie)
		assert.EqualValues(t, 3, ie.Total)
		assert.Equal(t, coupon.Stats{Taken: 3, Issued: 3}, f.stats(t, tpl.ID))
	})
}

func testIssueIdempotency(t *testing.T, h Harness) {
	ctx := context.Background()

	t.Run("Sequential", func(t *testing.T) {
		f := open(t, h)
		tpl := f.template(t, coupon.Template{ID: "once", TotalQuantity: 1})
		other := f.template(t, coupon.Template{ID: "other"})
		c := f.issue(t, tpl.ID, "alice", "req")
		again := f.issue(t, tpl.ID, "alice", "req")
		assert.Equal(t, c, again, "the same request returns the same coupon, even when sold out")

		_, err := f.Service.Issue(ctx, tpl.ID, "bob", "req")
		assert.ErrorIs(t, err, coupon.ErrRequestConflict, "a request ID is one issuance")
		_, err = f.Service.Issue(ctx, other.ID, "alice", "req")
		assert.ErrorIs(t, err, coupon.ErrRequestConflict)
		assert.Equal(t, coupon.Stats{Taken: 1, Issued: 1}, f.stats(t, tpl.ID))
		assert.Equal(t, coupon.Stats{}, f.stats(t, other.ID))
	})

	t.Run("ConcurrentDuplicates", func(t *testing.T) {
		f := open(t, h)
		tpl := f.template(t, coupon.Template{ID: "dups", TotalQuantity: 10, PerUserLimit: 2})
		const n = 50
		ids := make([]string, n)
		errs := make([]error, n)
		testkit.Together(n, func(i int) {
			c, err := f.Service.Issue(ctx, tpl.ID, "alice", "same-request")
			ids[i], errs[i] = c.ID, err
		})
		for i := range n {
			require.NoError(t, errs[i])
			assert.Equal(t, ids[0], ids[i])
		}
		assert.Equal(t, coupon.Stats{Taken: 1, Issued: 1}, f.stats(t, tpl.ID))
	})

	t.Run("DuplicatesRaceForTheLastCoupon", func(t *testing.T) {
		f := open(t, h)
		tpl := f.template(t, coupon.Template{ID: "last", TotalQuantity: 1})
		const n = 40
		type result struct {
			c   coupon.Coupon
			err error
		}
		res := make([]result, n)
		testkit.Together(n, func(i int) {
			user, req := "alice", "alice-req" // even goroutines: one request, sent 20 times
			if i%2 == 1 {
				user, req = fmt.Sprint("user-", i), fmt.Sprint("req-", i)
			}
			c, err := f.Service.Issue(ctx, tpl.ID, user, req)
			res[i] = result{c, err}
		})
		ids := f.durableIDs(t, tpl.ID)
		require.Len(t, ids, 1)
		var aliceWon, othersWon int
		for i, r := range res {
			if r.err != nil {
				require.ErrorIs(t, r.err, coupon.ErrSoldOut)
				continue
			}
			assert.Equal(t, ids[0], r.c.ID)
			if i%2 == 0 {
				aliceWon++
			} else {
				othersWon++
			}
		}
		assert.True(t, aliceWon == n/2 && othersWon == 0 || aliceWon == 0 && othersWon == 1,
			"alice's duplicates win or lose together: alice %d, others %d", aliceWon, othersWon)
		assert.Equal(t, coupon.Stats{Taken: 1, Issued: 1}, f.stats(t, tpl.ID))
	})
}

func testIssueInCallerTx(t *testing.T, h Harness) {
	ctx := context.Background()
	f := open(t, h)
	tpl := f.template(t, coupon.Template{ID: "tx", TotalQuantity: 5})
	rollback := errors.New("rollback")

	err := f.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		_, err := f.Service.WithTx(tx).Issue(ctx, tpl.ID, "alice", "in-tx")
		if !f.Service.JoinsTx() {
			require.ErrorIs(t, err, coupon.ErrCannotJoinTx)
			return rollback
		}
		require.NoError(t, err)
		return rollback
	})
	require.ErrorIs(t, err, rollback)
	assert.Equal(t, coupon.Stats{}, f.stats(t, tpl.ID), "a rolled-back issue takes nothing")

	if !f.Service.JoinsTx() {
		return
	}
	var c coupon.Coupon
	require.NoError(t, f.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		c, err = f.Service.WithTx(tx).Issue(ctx, tpl.ID, "alice", "in-tx")
		return err
	}))
	assert.Equal(t, c, f.coupon(t, c.ID))
	assert.Equal(t, coupon.Stats{Taken: 1, Issued: 1}, f.stats(t, tpl.ID))
}

// testFailedWrite makes the database refuse the coupon's row (a trigger) and checks that the
// failed issue took nothing: the count, the user's limit and the request are all free.
func testFailedWrite(t *testing.T, h Harness) {
	ctx := context.Background()
	f := open(t, h)
	tpl := f.template(t, coupon.Template{ID: "poisoned", TotalQuantity: 2})
	f.issue(t, tpl.ID, "alice", "alice-1")

	create := "CREATE TRIGGER coupon_test_poison BEFORE INSERT ON coupon_coupons FOR EACH ROW " +
		"BEGIN IF NEW.user_id = 'poison' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poisoned'; END IF; END"
	if sqlutil.IsSQLite(f.DB) {
		create = "CREATE TRIGGER coupon_test_poison BEFORE INSERT ON coupon_coupons " +
			"WHEN NEW.user_id = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
	}
	_, err := f.DB.ExecContext(ctx, create)
	require.NoError(t, err)
	for range 3 {
		_, err = f.Service.Issue(ctx, tpl.ID, "poison", "poison-1")
		require.ErrorContains(t, err, "poisoned")
		assert.Equal(t, errcode.Unknown, errcode.CodeOf(err), "a storage failure is no business answer")
		assert.Equal(t, coupon.Stats{Taken: 1, Issued: 1}, f.stats(t, tpl.ID), "a failed write gives its take back")
	}
	_, err = f.DB.ExecContext(ctx, "DROP TRIGGER coupon_test_poison")
	require.NoError(t, err)

	c := f.issue(t, tpl.ID, "poison", "poison-1")
	assert.Equal(t, 1, c.Ordinal, "the user's ordinal was given back")
	assert.Equal(t, int64(2), c.Place, "the place was given back")
	_, err = f.Service.Issue(ctx, tpl.ID, "bob", "bob-1")
	assert.ErrorIs(t, err, coupon.ErrSoldOut)
	assert.Equal(t, coupon.Stats{Taken: 2, Issued: 2}, f.stats(t, tpl.ID))
}
