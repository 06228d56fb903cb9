package rediscoupon_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/rediscoupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/errcode"
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

// twoServices returns a Service issuing through Redis and one through SQL, on one fresh
// database (nothing cached in either).
func twoServices(t *testing.T) (viaRedis, viaSQL *coupon.Service, rdb *redis.Client, db *bun.DB) {
	db = testenv.MySQL(t)
	require.NoError(t, coupon.CreateSchema(context.Background(), db))
	require.NoError(t, sqlcoupon.CreateSchema(context.Background(), db))
	rdb = testenv.Redis(t)
	viaRedis = testkit.Must(coupon.New(db, rediscoupon.New(rdb)))(t)
	viaSQL = testkit.Must(coupon.New(db, sqlcoupon.New()))(t)
	return viaRedis, viaSQL, rdb, db
}

// holders returns the users holding the template's coupons, by place.
func holders(t *testing.T, db *bun.DB, templateID string) []string {
	t.Helper()
	var users []string
	require.NoError(t, db.NewSelect().TableExpr("coupon_coupons").Column("user_id").
		Where("template_id = ?", templateID).Order("place").Scan(context.Background(), &users))
	return users
}

// TestTwoIssuersOneTemplateRush: as TestTwoIssuersOneTemplate, with 100 requests through
// each Service at once, for a template of 50 created through SQL: the SQL issuer issues
// exactly 50, one per user, and every request through Redis is refused, writing nothing.
func TestTwoIssuersOneTemplateRush(t *testing.T) {
	ctx := context.Background()
	viaRedis, viaSQL, _, db := twoServices(t)
	tpl := createTemplate(t, viaSQL, coupon.Template{ID: "rush", TotalQuantity: 50})
	const each = 100
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	for i := range 2 * each {
		wg.Go(func() {
			svc, user := viaSQL, fmt.Sprint("s", i/2)
			if i%2 == 1 {
				svc, user = viaRedis, fmt.Sprint("r", i/2)
			}
			_, err := svc.Issue(ctx, tpl.ID, user, user)
			outcome := fmt.Sprintf("%s: %s", user[:1], errcode.ReasonOf(err))
			mu.Lock()
			outcomes[outcome]++
			mu.Unlock()
		})
	}
	wg.Wait()
	assert.Equal(t, map[string]int{"s: ": 50, "s: coupon_sold_out": 50, "r: coupon_other_issuer": each}, outcomes)
	got := holders(t, db, tpl.ID)
	assert.Len(t, got, 50)
	for _, u := range got {
		assert.Equal(t, "s", u[:1])
	}
	requireStats(t, viaSQL, tpl.ID, coupon.Stats{Taken: 50, Issued: 50})
}

// TestTemplateOfAnEarlierVersionIsClaimed: a template created by a version that recorded
// no issuer is claimed by the first Service to issue it; the other refuses it from then on.
func TestTemplateOfAnEarlierVersionIsClaimed(t *testing.T) {
	ctx := context.Background()
	viaRedis, viaSQL, _, db := twoServices(t)
	tpl := createTemplate(t, testkit.Must(coupon.New(db, sqlcoupon.New()))(t), coupon.Template{ID: "old", TotalQuantity: 5})
	_, err := db.NewRaw("UPDATE coupon_templates SET issuer = NULL WHERE id = ?", tpl.ID).Exec(ctx)
	require.NoError(t, err)

	c, err := viaRedis.Issue(ctx, tpl.ID, "r1", "r1")
	require.NoError(t, err)
	assert.Equal(t, int64(1), c.Place)
	_, err = viaSQL.Issue(ctx, tpl.ID, "s1", "s1")
	assert.Equal(t, `coupon: the template is issued by another issuer (template "old", user "s1", request "s1", issuer "redis")`, fmt.Sprint(err))
	assert.Equal(t, []string{"r1"}, holders(t, db, tpl.ID))
	requireStats(t, viaRedis, tpl.ID, coupon.Stats{Taken: 1, Issued: 1})
}

// claimAfterTake is the Redis issuer calling claim right after it took for the request
// "late": a ClaimIssuance for another issuer between a take and its write.
type claimAfterTake struct {
	*rediscoupon.Issuer
	claim func()
}

func (i claimAfterTake) Take(ctx context.Context, r coupon.TakeRequest) (coupon.Taken, error) {
	taken, err := i.Issuer.Take(ctx, r)
	if err == nil && r.RequestID == "late" {
		i.claim()
	}
	return taken, err
}

// TestClaimIssuanceMovesATemplate: a template issued through Redis is moved to SQL
// (ClaimIssuance) and back. A Redis take made before the move and written after it is
// refused and given back; a coupon being written when the move starts is waited for and
// counted; from the move on, the former issuer refuses every issue except replays of the
// requests it served, and the new one counts on from the coupons durably issued, up to
// the total exactly.
func TestClaimIssuanceMovesATemplate(t *testing.T) {
	ctx := context.Background()
	_, viaSQL, rdb, db := twoServices(t)
	viaRedis := testkit.Must(coupon.New(db, claimAfterTake{Issuer: rediscoupon.New(rdb), claim: func() {
		require.NoError(t, viaSQL.ClaimIssuance(ctx, "move"))
	}}))(t)
	tpl := createTemplate(t, viaRedis, coupon.Template{ID: "move", TotalQuantity: 6})
	first, err := viaRedis.Issue(ctx, tpl.ID, "r1", "r1")
	require.NoError(t, err)

	// r2's coupon is being written (its transaction holds the template's shared lock)
	// when the move starts: the move waits for it, then counts it.
	claimed := make(chan error, 1)
	_, err = viaRedis.IssueThen(ctx, tpl.ID, "r2", "r2", func(ctx context.Context, tx bun.Tx, c coupon.Coupon) error {
		go func() { claimed <- viaSQL.ClaimIssuance(context.Background(), tpl.ID) }()
		for waiting := 0; waiting == 0; {
			select {
			case err := <-claimed:
				return fmt.Errorf("the move did not wait for the coupon being written: %v", err)
			default:
			}
			// The move's locking read of the template is running: it waits for this
			// transaction's shared lock. (information_schema.INNODB_TRX would wait too.)
			require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST "+
				"WHERE INFO LIKE 'SELECT `template_row`.`id` FROM `coupon_templates`%FOR UPDATE'").Scan(&waiting))
		}
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, <-claimed)

	// Taken through Redis before the move is claimed again, written after: refused.
	_, err = viaRedis.Issue(ctx, tpl.ID, "r3", "late")
	assert.Equal(t, `coupon: the template is issued by another issuer (template "move", user "r3", request "late", issuer "sql")`, fmt.Sprint(err))
	assert.ErrorIs(t, err, coupon.ErrOtherIssuer)
	taken, err := rdb.HGet(ctx, "coupon:{move}", "taken").Result()
	require.NoError(t, err)
	assert.Equal(t, "2", taken, "the late take was given back")
	_, err = viaRedis.Issue(ctx, tpl.ID, "r4", "r4")
	assert.ErrorIs(t, err, coupon.ErrOtherIssuer)
	again, err := viaRedis.Issue(ctx, tpl.ID, "r1", "r1")
	require.NoError(t, err, "a request the former issuer served is replayed")
	assert.Equal(t, first.ID, again.ID)

	for i := 1; i <= 5; i++ {
		c, err := viaSQL.Issue(ctx, tpl.ID, fmt.Sprint("s", i), fmt.Sprint("s", i))
		if i <= 4 {
			require.NoError(t, err)
			assert.Equal(t, int64(2+i), c.Place)
		} else {
			assert.ErrorIs(t, err, coupon.ErrSoldOut)
		}
	}
	assert.Equal(t, []string{"r1", "r2", "s1", "s2", "s3", "s4"}, holders(t, db, tpl.ID))
	requireStats(t, viaSQL, tpl.ID, coupon.Stats{Taken: 6, Issued: 6})

	// And back: Redis counts the coupons SQL issued (a recount).
	require.NoError(t, viaRedis.ClaimIssuance(ctx, tpl.ID))
	_, err = viaSQL.Issue(ctx, tpl.ID, "s9", "s9")
	assert.ErrorIs(t, err, coupon.ErrOtherIssuer)
	_, err = viaRedis.Issue(ctx, tpl.ID, "r9", "r9")
	assert.ErrorIs(t, err, coupon.ErrSoldOut)
	requireStats(t, viaRedis, tpl.ID, coupon.Stats{Taken: 6, Issued: 6})
}
