package rediscoupon_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/rediscoupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

// issuance is what one Issue call ended with: the coupon's place, or the error.
type issuance struct {
	Place int64
	Err   string
}

func issued(c coupon.Coupon, err error) issuance {
	if err != nil {
		return issuance{Err: err.Error()}
	}
	return issuance{Place: c.Place}
}

// TestTwoIssuersOneTemplate: two Services on one database, one issuing through Redis, the
// other through SQL (two instances configured differently, or a switch from one issuer to
// the other under way), take turns at one first-come template of 4. Each issuer keeps its
// own count of the template: the SQL issuer's counter does not see the coupons the Redis
// issuer wrote, so the place it bumps to is already held in SQL, and its issue fails on
// the unique key, again and again, as an untyped storage error. The template belongs to
// the issuer of the Service that created it: the other must refuse every issue with
// ErrOtherIssuer and write nothing, and the owner's count must stay exact.
func TestTwoIssuersOneTemplate(t *testing.T) {
	ctx := context.Background()
	db := testenv.MySQL(t)
	require.NoError(t, coupon.CreateSchema(ctx, db))
	require.NoError(t, sqlcoupon.CreateSchema(ctx, db))
	viaRedis := testkit.Must(coupon.New(db, rediscoupon.New(testenv.Redis(t))))(t)
	viaSQL := testkit.Must(coupon.New(db, sqlcoupon.New()))(t)
	tpl := createTemplate(t, viaRedis, coupon.Template{ID: "rush", TotalQuantity: 4})

	other := fmt.Sprintf(`%v (template "rush", user %%q, request %%q, issuer "redis")`, coupon.ErrOtherIssuer)
	var got, want []issuance
	for i := 1; i <= 6; i++ {
		redisUser, sqlUser := fmt.Sprint("r", i), fmt.Sprint("s", i)
		got = append(got, issued(viaRedis.Issue(ctx, tpl.ID, redisUser, redisUser)))
		c, err := viaSQL.Issue(ctx, tpl.ID, sqlUser, sqlUser)
		got = append(got, issued(c, err))
		assert.ErrorIs(t, err, coupon.ErrOtherIssuer, "issue %d through SQL", i)
		if i <= 4 {
			want = append(want, issuance{Place: int64(i)})
		} else {
			want = append(want, issuance{Err: fmt.Sprintf(`%v (template "rush", user %q, request %q, total 4)`, coupon.ErrSoldOut, redisUser, redisUser)})
		}
		want = append(want, issuance{Err: fmt.Sprintf(other, sqlUser, sqlUser)})
	}
	assert.Equal(t, want, got, "every issue, Redis then SQL, turn by turn")

	var holders []string
	require.NoError(t, db.NewSelect().TableExpr("coupon_coupons").Column("user_id").
		Where("template_id = ?", tpl.ID).Order("place").Scan(ctx, &holders))
	assert.Equal(t, []string{"r1", "r2", "r3", "r4"}, holders, "only the owner's coupons, in order")
	requireStats(t, viaRedis, tpl.ID, coupon.Stats{Taken: 4, Issued: 4})
}
