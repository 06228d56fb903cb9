package rediscoupon_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/rediscoupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

// TestRedisCrashAndEmptyRestart: while Redis is down, issuing, counting and recounting
// fail closed with errcode.ErrUnavailable and write nothing, and redemption (SQL only)
// goes on. Redis comes back empty (killed, no persistence): the count, each user's
// ordinals and every request's coupon are rebuilt from SQL, and the template sells out at
// exactly its total.
func TestRedisCrashAndEmptyRestart(t *testing.T) {
	ctx := context.Background()
	own := testenv.OwnRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: own.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	db := testenv.MySQL(t)
	require.NoError(t, coupon.CreateSchema(ctx, db))
	svc := testkit.Must(coupon.New(db, rediscoupon.New(rdb)))(t)
	createTemplate(t, svc, coupon.Template{ID: "t", TotalQuantity: 3})
	alice := testkit.Must(svc.Issue(ctx, "t", "alice", "req-alice"))(t)
	testkit.Must(svc.Issue(ctx, "t", "bob", "req-bob"))(t)

	own.Stop(t, 0)
	_, err := svc.Issue(ctx, "t", "carol", "req-carol")
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	_, err = svc.Issue(ctx, "t", "alice", "req-alice")
	require.ErrorIs(t, err, errcode.ErrUnavailable, "even a replay: Redis is the first-come decision")
	_, err = svc.Stats(ctx, "t")
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	require.ErrorIs(t, svc.Recount(ctx, "t"), errcode.ErrUnavailable)
	_, err = svc.Reserve(ctx, alice.ID, "alice", "order-1", 10_000)
	require.NoError(t, err, "redemption does not need Redis")

	own.Start(t)
	n, err := rdb.DBSize(ctx).Result()
	require.NoError(t, err)
	require.Zero(t, n, "Redis restarted empty")
	again, err := svc.Issue(ctx, "t", "alice", "req-alice")
	require.NoError(t, err)
	assert.Equal(t, alice.ID, again.ID)
	_, err = svc.Issue(ctx, "t", "alice", "req-alice-2")
	require.ErrorIs(t, err, coupon.ErrLimitReached)
	testkit.Must(svc.Issue(ctx, "t", "carol", "req-carol"))(t)
	_, err = svc.Issue(ctx, "t", "dave", "req-dave")
	require.ErrorIs(t, err, coupon.ErrSoldOut)
	requireStats(t, svc, "t", coupon.Stats{Taken: 3, Issued: 3, Reserved: 1})
}
