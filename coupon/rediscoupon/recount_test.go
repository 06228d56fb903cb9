package rediscoupon_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/rediscoupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

func openRedis(t *testing.T) (*coupon.Service, *redis.Client, *bun.DB) {
	rdb := testenv.Redis(t)
	svc, db := openWith(t, rediscoupon.New(rdb, rediscoupon.WithKeyPrefix("test:")))
	return svc, rdb, db
}

// openWith returns a Service issuing through issuer, on a fresh MySQL database.
func openWith(t *testing.T, issuer coupon.Issuer) (*coupon.Service, *bun.DB) {
	db := testenv.MySQL(t)
	require.NoError(t, coupon.CreateSchema(context.Background(), db))
	return testkit.Must(coupon.New(db, issuer))(t), db
}

// createTemplate creates tpl, a fixed 500 KRW off.
func createTemplate(t *testing.T, svc *coupon.Service, tpl coupon.Template) coupon.Template {
	t.Helper()
	tpl.Terms = coupon.Terms{Kind: coupon.FixedAmount, Amount: 500}
	got, err := svc.CreateTemplate(context.Background(), tpl)
	require.NoError(t, err)
	return got
}

func requireStats(t *testing.T, svc *coupon.Service, templateID string, want coupon.Stats) {
	t.Helper()
	st, err := svc.Stats(context.Background(), templateID)
	require.NoError(t, err)
	assert.Equal(t, want, st)
}

// TestRecountRepairsRedis: a Redis state that went wrong (here: counts rewritten by hand)
// is rebuilt exactly from SQL by Recount, down to each user's ordinals and requests.
func TestRecountRepairsRedis(t *testing.T) {
	ctx := context.Background()
	svc, rdb, _ := openRedis(t)
	tpl := createTemplate(t, svc, coupon.Template{ID: "t", TotalQuantity: 10, PerUserLimit: 2})
	for i := range 6 {
		_, err := svc.Issue(ctx, tpl.ID, fmt.Sprint("user-", i%3), fmt.Sprint("req-", i))
		require.NoError(t, err)
	}
	key := "test:{t}"
	want, err := rdb.HGetAll(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, "6", want["taken"])
	assert.Equal(t, "2", want["n|user-0"])
	assert.Equal(t, "1|user-0", want["r|req-0"])
	assert.Equal(t, "req-3", want["o|2|user-0"])

	require.NoError(t, rdb.HSet(ctx, key, "taken", 10, "n|user-0", 0).Err())
	require.NoError(t, rdb.HDel(ctx, key, "r|req-5").Err())
	_, err = svc.Issue(ctx, tpl.ID, "user-9", "req-9")
	require.ErrorIs(t, err, coupon.ErrSoldOut, "the corrupted count refuses a coupon that exists")

	require.NoError(t, svc.Recount(ctx, tpl.ID))
	got, err := rdb.HGetAll(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, want, got, "Recount rebuilds the state exactly")
	ttl, err := rdb.TTL(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, time.Duration(-1), ttl, "the installed state does not expire")
	keys, err := rdb.Keys(ctx, "test:*").Result()
	require.NoError(t, err)
	assert.Equal(t, []string{key}, keys, "no staging key is left behind")

	_, err = svc.Issue(ctx, tpl.ID, "user-9", "req-9")
	require.NoError(t, err)
	_, err = svc.Issue(ctx, tpl.ID, "user-0", "req-new")
	require.ErrorIs(t, err, coupon.ErrLimitReached)
	requireStats(t, svc, tpl.ID, coupon.Stats{Taken: 7, Issued: 7})
}

// TestRedisBehindSQL: a coupon Redis never counted (as one written after a warm-up read SQL)
// holds the ordinal Redis offers next. The Service keeps that ordinal taken, takes
// another, and the count ends exact.
func TestRedisBehindSQL(t *testing.T) {
	ctx := context.Background()
	svc, rdb, db := openRedis(t)
	tpl := createTemplate(t, svc, coupon.Template{ID: "t", PerUserLimit: 2})
	_, err := svc.Issue(ctx, tpl.ID, "bob", "bob-1") // Redis state loaded
	require.NoError(t, err)

	// Another Redis issuer, whose keys have another prefix (a state of its own), writes
	// alice's first coupon behind this one's back. (An issuer of another kind is refused:
	// TestTwoIssuersOneTemplate.)
	stray, err := testkit.Must(coupon.New(db, rediscoupon.New(rdb, rediscoupon.WithKeyPrefix("other:"))))(t).Issue(ctx, tpl.ID, "alice", "stray")
	require.NoError(t, err)
	require.Equal(t, 1, stray.Ordinal)

	c, err := svc.Issue(ctx, tpl.ID, "alice", "alice-1")
	require.NoError(t, err)
	assert.Equal(t, 2, c.Ordinal, "ordinal 1 is taken durably")
	_, err = svc.Issue(ctx, tpl.ID, "alice", "alice-2")
	assert.ErrorIs(t, err, coupon.ErrLimitReached)
	again, err := svc.Issue(ctx, tpl.ID, "alice", "alice-1")
	require.NoError(t, err)
	assert.Equal(t, c.ID, again.ID)
	requireStats(t, svc, tpl.ID, coupon.Stats{Taken: 3, Issued: 3})
}

// TestRecountManyPages: a state of more coupons than one page of the load (1,000) is
// rebuilt field for field, and a later rush is counted from it exactly.
func TestRecountManyPages(t *testing.T) {
	ctx := context.Background()
	svc, rdb, _ := openRedis(t)
	tpl := createTemplate(t, svc, coupon.Template{ID: "big", TotalQuantity: 2600, PerUserLimit: 2})
	const coupons = 2500
	jobs := make(chan int)
	errs := make(chan error, coupons)
	for range 50 {
		go func() {
			for i := range jobs {
				_, err := svc.Issue(ctx, tpl.ID, fmt.Sprint("user-", i/2), fmt.Sprint("req-", i))
				errs <- err
			}
		}()
	}
	for i := range coupons {
		jobs <- i
	}
	close(jobs)
	for range coupons {
		require.NoError(t, <-errs)
	}
	want, err := rdb.HGetAll(ctx, "test:{big}").Result()
	require.NoError(t, err)
	require.Len(t, want, 2+coupons/2+4*coupons, "taken and top, one count per user, an ordinal, a place and a request (twice) per coupon")

	require.NoError(t, rdb.FlushDB(ctx).Err())
	require.NoError(t, svc.Recount(ctx, tpl.ID))
	got, err := rdb.HGetAll(ctx, "test:{big}").Result()
	require.NoError(t, err)
	assert.Equal(t, want, got)

	for i := range 200 {
		_, err := svc.Issue(ctx, tpl.ID, fmt.Sprint("late-", i), fmt.Sprint("late-", i))
		if i < 100 {
			require.NoError(t, err)
		} else {
			require.ErrorIs(t, err, coupon.ErrSoldOut)
		}
	}
	requireStats(t, svc, tpl.ID, coupon.Stats{Taken: 2600, Issued: 2600})
}

// replaySignal is the Redis issuer, telling the test when a take was first answered as a
// replay.
type replaySignal struct {
	*rediscoupon.Issuer
	once     *sync.Once
	replayed chan struct{}
}

func (i replaySignal) Take(ctx context.Context, r coupon.TakeRequest) (coupon.Taken, error) {
	taken, err := i.Issuer.Take(ctx, r)
	if err == nil && taken.Replay {
		i.once.Do(func() { close(i.replayed) })
	}
	return taken, err
}

// TestRetryOverlapsFailedWrite: a client retries its request while the first attempt is
// still writing, and that first write then fails for sure (here its IssuedFunc fails: the
// event could not be written). The retry took the same unit in Redis (a replay) and its
// write commits after the first attempt gave up, so the first attempt must not give the
// unit back: the coupon exists, Redis counts it, and the template's last coupon is not
// issued a second time.
func TestRetryOverlapsFailedWrite(t *testing.T) {
	ctx := context.Background()
	issuer := replaySignal{Issuer: rediscoupon.New(testenv.Redis(t)), once: new(sync.Once), replayed: make(chan struct{})}
	svc, _ := openWith(t, issuer)
	createTemplate(t, svc, coupon.Template{ID: "t", TotalQuantity: 1})

	eventDown := errors.New("event store down")
	written, firstDone := make(chan struct{}), make(chan struct{})
	var firstErr error
	go func() {
		defer close(firstDone)
		_, firstErr = svc.IssueThen(ctx, "t", "alice", "req-1", func(context.Context, bun.Tx, coupon.Coupon) error {
			close(written)
			<-issuer.replayed // the retry has taken (as a replay) before this attempt fails
			return eventDown
		})
	}()
	<-written
	retried, err := svc.IssueThen(ctx, "t", "alice", "req-1", func(context.Context, bun.Tx, coupon.Coupon) error {
		<-firstDone // the first attempt has given up before the retry commits
		return nil
	})
	require.NoError(t, err)
	<-firstDone
	require.ErrorIs(t, firstErr, eventDown)

	requireStats(t, svc, "t", coupon.Stats{Taken: 1, Issued: 1})
	_, err = svc.Issue(ctx, "t", "bob", "req-2")
	require.ErrorIs(t, err, coupon.ErrSoldOut, "the only coupon was issued to alice")
	again, err := svc.Issue(ctx, "t", "alice", "req-1")
	require.NoError(t, err)
	assert.Equal(t, retried.ID, again.ID)
	requireStats(t, svc, "t", coupon.Stats{Taken: 1, Issued: 1})
}

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
	svc, _ := openWith(t, rediscoupon.New(rdb))
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
	require.Eventually(t, func() bool { return rdb.Ping(ctx).Err() == nil }, 10*time.Second, 50*time.Millisecond, "Redis is back")
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

// TestStateOfEarlierVersion: a template's state written by a version without places (no
// top, no places) is not used: the next issue loads the state again from SQL, places
// included, and the template sells out at exactly its total.
func TestStateOfEarlierVersion(t *testing.T) {
	ctx := context.Background()
	svc, rdb, _ := openRedis(t)
	tpl := createTemplate(t, svc, coupon.Template{ID: "t", TotalQuantity: 3})
	testkit.Must(svc.Issue(ctx, tpl.ID, "alice", "req-alice"))(t)
	testkit.Must(svc.Issue(ctx, tpl.ID, "bob", "req-bob"))(t)
	key := "test:{t}"
	require.NoError(t, rdb.HDel(ctx, key, "top", "p|1", "p|2", "q|req-alice", "q|req-bob").Err())
	require.NoError(t, rdb.HSet(ctx, key, "taken", 0).Err(), "a count the earlier state got wrong")

	c := testkit.Must(svc.Issue(ctx, tpl.ID, "carol", "req-carol"))(t)
	assert.Equal(t, int64(3), c.Place)
	_, err := svc.Issue(ctx, tpl.ID, "dave", "req-dave")
	require.ErrorIs(t, err, coupon.ErrSoldOut)
	got, err := rdb.HMGet(ctx, key, "taken", "top", "p|1", "q|req-bob").Result()
	require.NoError(t, err)
	assert.Equal(t, []any{"3", "3", "req-alice", "2"}, got)
	requireStats(t, svc, tpl.ID, coupon.Stats{Taken: 3, Issued: 3})
}
