package sqlcoupon_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

// TestIssueInOlderSnapshot: Issue through WithTx(tx) in a caller's transaction that read
// before the template's first issue elsewhere issues the coupon, counted on the committed
// counter, rather than failing: the counter exists before that snapshot, created with the
// template or, for a template of an earlier version (created without one), when a
// Service first read the template outside a transaction.
func TestIssueInOlderSnapshot(t *testing.T) {
	for _, earlier := range []bool{false, true} {
		t.Run(map[bool]string{false: "NewTemplate", true: "TemplateOfEarlierVersion"}[earlier], func(t *testing.T) {
			ctx := context.Background()
			db := testenv.MySQL(t)
			require.NoError(t, coupon.CreateSchema(ctx, db))
			require.NoError(t, sqlcoupon.CreateSchema(ctx, db))
			svc := testkit.Must(coupon.New(db, sqlcoupon.New()))(t)
			_, err := svc.CreateTemplate(ctx, coupon.Template{ID: "t", TotalQuantity: 2, Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 500}})
			require.NoError(t, err)
			if earlier {
				_, err := db.NewDelete().TableExpr("coupon_issue_counters").Where("template_id = ?", "t").Exec(ctx)
				require.NoError(t, err)
				svc = testkit.Must(coupon.New(db, sqlcoupon.New()))(t) // nothing cached
				testkit.Must(svc.Template(ctx, "t"))(t)
			}

			tx, err := db.BeginTx(ctx, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = tx.Rollback() })
			_, err = svc.WithTx(tx).Wallet(ctx, "alice", coupon.WalletQuery{}) // the snapshot is taken here
			require.NoError(t, err)
			testkit.Must(svc.Issue(ctx, "t", "bob", "req-bob"))(t) // the template's first issue

			c, err := svc.WithTx(tx).Issue(ctx, "t", "alice", "req-alice")
			require.NoError(t, err)
			require.NoError(t, tx.Commit())
			assert.Equal(t, c, testkit.Must(svc.Coupon(ctx, c.ID))(t))
			assert.Equal(t, int64(2), c.Place)
			_, err = svc.Issue(ctx, "t", "carol", "req-carol")
			require.ErrorIs(t, err, coupon.ErrSoldOut)
			assert.Equal(t, coupon.Stats{Taken: 2, Issued: 2}, testkit.Must(svc.Stats(ctx, "t"))(t))
		})
	}
}

// TestSchemaOfEarlierVersion: tables created by a version without places (no place column,
// no unique index on it) with coupons in them get both from CreateSchema; the coupons of
// the limited template get the places 1..n in the order they were issued, those of the
// unlimited one none; issuing then goes on from there and stops at the total.
func TestSchemaOfEarlierVersion(t *testing.T) {
	for name, open := range map[string]func(testing.TB) *bun.DB{"MySQL": testenv.MySQL, "SQLite": testenv.SQLite} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db := open(t)
			require.NoError(t, coupon.CreateSchema(ctx, db))
			require.NoError(t, sqlcoupon.CreateSchema(ctx, db))
			svc := testkit.Must(coupon.New(db, sqlcoupon.New()))(t)
			terms := coupon.Terms{Kind: coupon.FixedAmount, Amount: 500}
			for _, tpl := range []coupon.Template{{ID: "limited", Terms: terms, TotalQuantity: 5}, {ID: "unlimited", Terms: terms}} {
				testkit.Must(svc.CreateTemplate(ctx, tpl))(t)
				for i := range 3 {
					testkit.Must(svc.Issue(ctx, tpl.ID, fmt.Sprint("user-", i), fmt.Sprint(tpl.ID, "-", i)))(t)
				}
			}

			// The earlier version's table.
			drop := "DROP INDEX coupon_coupons_place_uq"
			if !sqlutil.IsSQLite(db) {
				drop += " ON coupon_coupons"
			}
			_, err := db.ExecContext(ctx, drop)
			require.NoError(t, err)
			_, err = db.ExecContext(ctx, "ALTER TABLE coupon_coupons DROP COLUMN place")
			require.NoError(t, err)

			require.NoError(t, coupon.CreateSchema(ctx, db))
			require.NoError(t, coupon.CreateSchema(ctx, db), "CreateSchema is idempotent")
			places := func(templateID string) []int64 {
				var got []int64
				require.NoError(t, db.NewSelect().TableExpr("coupon_coupons").ColumnExpr("COALESCE(place, 0)").
					Where("template_id = ?", templateID).OrderExpr("seq").Scan(ctx, &got))
				return got
			}
			assert.Equal(t, []int64{1, 2, 3}, places("limited"), "in the order issued")
			assert.Equal(t, []int64{0, 0, 0}, places("unlimited"))

			svc = testkit.Must(coupon.New(db, sqlcoupon.New()))(t)
			for i := 3; i < 5; i++ {
				c := testkit.Must(svc.Issue(ctx, "limited", fmt.Sprint("user-", i), fmt.Sprint("limited-", i)))(t)
				assert.Equal(t, int64(i+1), c.Place)
			}
			_, err = svc.Issue(ctx, "limited", "user-5", "limited-5")
			require.ErrorIs(t, err, coupon.ErrSoldOut)
			_, err = db.ExecContext(ctx, `INSERT INTO coupon_coupons (id, template_id, user_id, ordinal, place, request_id,
				name, kind, amount, percent, max_discount, min_order_amount, state, issued_at)
				SELECT 'stray', template_id, 'user-9', 1, 3, 'stray', name, kind, amount, percent, max_discount,
				min_order_amount, state, issued_at FROM coupon_coupons WHERE request_id = 'limited-0'`)
			require.True(t, sqlutil.IsDuplicateKey(err), "the place is unique: %v", err)
			assert.Equal(t, []int64{1, 2, 3, 4, 5}, places("limited"))
			c := testkit.Must(svc.Issue(ctx, "unlimited", "user-3", "unlimited-3"))(t)
			assert.Zero(t, c.Place)
		})
	}
}
