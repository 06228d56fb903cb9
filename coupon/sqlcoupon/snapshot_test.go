package sqlcoupon_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
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
