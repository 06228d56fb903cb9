package rediscoupon_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/rediscoupon"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

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
	db := testenv.MySQL(t)
	rdb := testenv.Redis(t)
	require.NoError(t, coupon.CreateSchema(ctx, db))
	issuer := replaySignal{Issuer: rediscoupon.New(rdb), once: new(sync.Once), replayed: make(chan struct{})}
	svc := testkit.Must(coupon.New(db, issuer))(t)
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
