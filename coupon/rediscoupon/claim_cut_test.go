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
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

// TestClaimIssuanceCut: ClaimIssuance moving a template of 4, 2 of them issued through SQL,
// to the Redis issuer, with its database connection cut at each statement in turn, before
// the statement reaches the server and after its answer (the COMMIT included), then called
// again, as refserver's start-up retry does. The call fails as the database being
// unavailable or succeeds; after the retry the template is Redis's alone: the SQL issuer
// refuses it, writing nothing, and Redis issues exactly the 2 coupons left, no place twice.
func TestClaimIssuanceCut(t *testing.T) {
	ctx := context.Background()
	db, linked, link := testenv.LinkedMySQL(t)
	require.NoError(t, coupon.CreateSchema(ctx, db))
	require.NoError(t, sqlcoupon.CreateSchema(ctx, db))
	rdb := testenv.Redis(t)
	viaSQL := testkit.Must(coupon.New(db, sqlcoupon.New()))(t)
	claim := func(t *testing.T, id string, arm func()) (*coupon.Service, []string, []string, error) {
		t.Helper()
		createTemplate(t, viaSQL, coupon.Template{ID: id, TotalQuantity: 4})
		for _, u := range []string{"s1", "s2"} {
			_, err := viaSQL.Issue(ctx, id, u, id+u)
			require.NoError(t, err)
		}
		viaRedis := testkit.Must(coupon.New(linked, rediscoupon.New(rdb)))(t)
		arm()
		err := viaRedis.ClaimIssuance(ctx, id)
		cut, seen := link.Disarm()
		return viaRedis, cut, seen, err
	}
	exact := func(t *testing.T, viaRedis *coupon.Service, id string) {
		t.Helper()
		_, err := viaSQL.Issue(ctx, id, "s3", id+"s3")
		assert.ErrorIs(t, err, coupon.ErrOtherIssuer, "the SQL issuer refuses the template once it is Redis's")
		var got []issuance
		for _, u := range []string{"r3", "r4", "r5"} {
			got = append(got, issued(viaRedis.Issue(ctx, id, u, id+u)))
		}
		assert.Equal(t, []issuance{{Place: 3}, {Place: 4},
			{Err: fmt.Sprintf(`%v (template %q, user "r5", request %q, total 4)`, coupon.ErrSoldOut, id, id+"r5")}}, got)
		assert.Equal(t, []string{"s1", "s2", "r3", "r4"}, holders(t, db, id))
		requireStats(t, viaRedis, id, coupon.Stats{Taken: 4, Issued: 4})
	}

	viaRedis, _, seen, err := claim(t, "claim-clean", func() { link.Arm(nil, false) })
	require.NoError(t, err)
	exact(t, viaRedis, "claim-clean")
	t.Logf("ClaimIssuance sends %d statements: %q", len(seen), seen)
	require.Contains(t, seen, "COMMIT")
	for _, p := range testenv.CutPoints(seen, nil) {
		t.Run(p.String(), func(t *testing.T) {
			id := fmt.Sprintf("claim-%t-%d", p.After, p.N)
			viaRedis, cut, _, err := claim(t, id, func() { link.Arm(p.Match(), p.After) })
			require.Len(t, cut, 1)
			if err != nil {
				assert.ErrorIs(t, err, errcode.ErrUnavailable, "cut at %q", cut[0])
			}
			require.NoError(t, viaRedis.ClaimIssuance(ctx, id), "the claim again after the cut at %q", cut[0])
			exact(t, viaRedis, id)
		})
	}
}
