package rediscoupon_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/rediscoupon"
	"github.com/commercekit/commercekit/internal/testenv"
)

// takeCounter is the Redis issuer, counting the takes it granted.
type takeCounter struct {
	*rediscoupon.Issuer
	granted *atomic.Int64
}

func (i takeCounter) Take(ctx context.Context, r coupon.TakeRequest) (coupon.Taken, error) {
	taken, err := i.Issuer.Take(ctx, r)
	if err == nil {
		i.granted.Add(1)
	}
	return taken, err
}

// TestStateLostWithWritesInFlight: two coupons are taken and their SQL writes are held in
// flight while Redis loses its state (FLUSHDB, as a restart without persistence or a lost
// second of AOF would). The state is rebuilt from SQL without them, and every new request
// is taken, before the held writes commit. SQL still holds the template to its total:
// exactly TotalQuantity coupons exist, no user holds more than the limit, the surplus
// requests are told "sold out", and every request, asked again, gets the same answer.
func TestStateLostWithWritesInFlight(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	granted := new(atomic.Int64)
	svc, db := openWith(t, takeCounter{Issuer: rediscoupon.New(rdb), granted: granted})
	const total = 5
	createTemplate(t, svc, coupon.Template{ID: "t", TotalQuantity: total})

	// Two takes whose writes hold until released.
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll) // before the database is dropped, should the test fail early
	var inWrite sync.WaitGroup
	held := make([]chan error, 2)
	for i := range held {
		held[i] = make(chan error, 1)
		inWrite.Add(1)
		go func() {
			_, err := svc.IssueThen(ctx, "t", fmt.Sprint("held-", i), fmt.Sprint("held-", i), func(context.Context, bun.Tx, coupon.Coupon) error {
				inWrite.Done()
				<-release
				return nil
			})
			held[i] <- err
		}()
	}
	inWrite.Wait()
	require.NoError(t, rdb.FlushDB(ctx).Err(), "Redis loses the state with the two writes in flight")

	// After the loss, from the state rebuilt without the held coupons: the first held user
	// again under a new request (it takes that user's ordinal 1 and place 1 again, both
	// held by its coupon in flight), then five newcomers for the four places left.
	issue := func(user, req string) chan error {
		answer := make(chan error, 1)
		go func() {
			_, err := svc.Issue(ctx, "t", user, req)
			answer <- err
		}()
		return answer
	}
	waitTakes := func(n int) {
		t.Helper()
		require.Eventually(t, func() bool { return granted.Load() == int64(n) }, 30*time.Second, 5*time.Millisecond)
	}
	again := issue("held-0", "held-0-again")
	waitTakes(len(held) + 1)
	var newcomers []chan error
	for i := range total {
		newcomers = append(newcomers, issue(fmt.Sprint("new-", i), fmt.Sprint("new-", i)))
	}
	waitTakes(len(held) + total) // every place is taken
	releaseAll()

	for i := range held {
		require.NoError(t, <-held[i], "the held write commits")
	}
	require.ErrorIs(t, <-again, coupon.ErrSoldOut, "held-0's coupon and the newcomers' fill the total")
	var won, soldOut int
	for _, answer := range newcomers {
		switch err := <-answer; {
		case err == nil:
			won++
		default:
			require.ErrorIs(t, err, coupon.ErrSoldOut)
			soldOut++
		}
	}
	assert.Equal(t, total-len(held), won, "the newcomers won what the held coupons left")
	assert.Equal(t, len(held), soldOut)

	require.Equal(t, int64(total), durable(t, db, "t"), "never more than TotalQuantity coupons in SQL")
	var most int
	require.NoError(t, db.NewSelect().TableExpr("coupon_coupons").ColumnExpr("COUNT(*) AS n").Where("template_id = ?", "t").
		Group("user_id").OrderExpr("n DESC").Limit(1).Scan(ctx, &most))
	require.Equal(t, 1, most, "no user holds more than the limit")
	requireStats(t, svc, "t", coupon.Stats{Taken: total, Issued: total})

	// Every request gets its answer again; a late one is sold out.
	for i := range held {
		_, err := svc.Issue(ctx, "t", fmt.Sprint("held-", i), fmt.Sprint("held-", i))
		require.NoError(t, err)
	}
	_, err := svc.Issue(ctx, "t", "late", "late")
	require.ErrorIs(t, err, coupon.ErrSoldOut)
	require.Equal(t, int64(total), durable(t, db, "t"))
	requireStats(t, svc, "t", coupon.Stats{Taken: total, Issued: total})
}

// durable counts the template's coupons in SQL.
func durable(t *testing.T, db *bun.DB, templateID string) int64 {
	t.Helper()
	n, err := db.NewSelect().TableExpr("coupon_coupons").Where("template_id = ?", templateID).Count(context.Background())
	require.NoError(t, err)
	return n
}
