package coupontest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/internal/testkit"
)

// The rush of the issue's acceptance test.
const (
	rushRequests = 10_000
	rushUsers    = 5_000
	rushQuantity = 100
	// rushWorkers bounds the goroutines issuing at once (the race detector allows 8,128
	// live goroutines); every request still competes with up to that many others.
	rushWorkers = 200
)

type issued struct {
	userID string
	c      coupon.Coupon
	err    error
}

// rush sends the requests in random order from rushWorkers goroutines and returns the
// results in the order of reqs.
func rush(f *fixture, templateID string, reqs [][2]string) []issued {
	order := rand.Perm(len(reqs))
	res := make([]issued, len(reqs))
	testkit.Parallel(len(reqs), rushWorkers, func(k int) {
		i := order[k]
		c, err := f.Service.Issue(context.Background(), templateID, reqs[i][0], reqs[i][1])
		res[i] = issued{reqs[i][0], c, err}
	})
	return res
}

// checkRush checks every result is a coupon or a sold-out / limit rejection, that the
// coupons returned are exactly the durable ones, and returns them by ID.
func checkRush(t *testing.T, f *fixture, templateID string, res []issued) map[string]coupon.Coupon {
	t.Helper()
	got := make(map[string]coupon.Coupon)
	var soldOut, limited int
	for _, r := range res {
		switch {
		case r.err == nil:
			require.Equal(t, r.userID, r.c.UserID)
			if prev, dup := got[r.c.ID]; dup {
				require.Equal(t, prev.RequestID, r.c.RequestID, "one coupon, one request")
			}
			got[r.c.ID] = r.c
		case errors.Is(r.err, coupon.ErrSoldOut):
			soldOut++
		case errors.Is(r.err, coupon.ErrLimitReached):
			limited++
		default:
			require.NoError(t, r.err)
		}
	}
	ids := make([]string, 0, len(got))
	for id := range got {
		ids = append(ids, id)
	}
	durable := f.durableIDs(t, templateID)
	sort.Strings(ids)
	sort.Strings(durable)
	require.Equal(t, durable, ids, "the coupons returned are exactly the durable ones")
	t.Logf("%d requests: %d coupons, %d sold out, %d over the user's limit", len(res), len(got), soldOut, limited)
	return got
}

func testFirstCome(t *testing.T, h Harness) {
	f := open(t, h)
	tpl := f.template(t, coupon.Template{ID: "rush", TotalQuantity: rushQuantity})
	reqs := make([][2]string, rushRequests)
	for i := range reqs {
		reqs[i] = [2]string{fmt.Sprint("user-", i%rushUsers), fmt.Sprint("req-", i)}
	}
	began := time.Now()
	res := rush(f, tpl.ID, reqs)
	t.Logf("%d requests from %d users on %d goroutines in %v", rushRequests, rushUsers, rushWorkers, time.Since(began))

	got := checkRush(t, f, tpl.ID, res)
	require.Len(t, got, rushQuantity, "exactly the total quantity is issued")
	users := make(map[string]bool)
	for _, c := range got {
		users[c.UserID] = true
	}
	assert.Len(t, users, rushQuantity, "no user holds more than one")
	assert.Equal(t, 1, f.maxPerUser(t, tpl.ID))
	assert.Equal(t, coupon.Stats{Taken: rushQuantity, Issued: rushQuantity}, f.stats(t, tpl.ID))
}

// openLossy opens the backend when it keeps state outside SQL (LoseIssuerState); nil
// otherwise.
func openLossy(t *testing.T, h Harness) *fixture {
	f := open(t, h)
	if f.LoseIssuerState == nil {
		t.Log("the issuer keeps no state outside SQL: nothing to lose")
		return nil
	}
	return f
}

// testStateLoss drops the issuer's state outside SQL twice: once before a Stats call, once
// before a rush that includes retries of every request served before the loss.
func testStateLoss(t *testing.T, h Harness) {
	f := openLossy(t, h)
	if f == nil {
		return
	}
	ctx := context.Background()
	tpl := f.template(t, coupon.Template{ID: "lossy", TotalQuantity: rushQuantity, PerUserLimit: 2})
	before := make(map[string]coupon.Coupon) // by request ID
	for i := range 30 {
		req := fmt.Sprint("before-", i, "-1")
		before[req] = f.issue(t, tpl.ID, fmt.Sprint("user-", i), req)
	}
	for i := range 10 {
		req := fmt.Sprint("before-", i, "-2")
		before[req] = f.issue(t, tpl.ID, fmt.Sprint("user-", i), req)
	}

	f.LoseIssuerState(t)
	assert.Equal(t, coupon.Stats{Taken: 40, Issued: 40}, f.stats(t, tpl.ID), "the count is rebuilt from SQL")

	f.LoseIssuerState(t)
	var reqs [][2]string
	for req, c := range before {
		reqs = append(reqs, [2]string{c.UserID, req})
	}
	for i := range 2000 {
		reqs = append(reqs, [2]string{fmt.Sprint("user-", i%1000), fmt.Sprint("after-", i)})
	}
	res := rush(f, tpl.ID, reqs)
	got := checkRush(t, f, tpl.ID, res)
	require.Len(t, got, rushQuantity)
	for i, r := range res {
		if c, ok := before[reqs[i][1]]; ok {
			require.NoError(t, r.err)
			assert.Equal(t, c.ID, r.c.ID, "the retry of %s got its coupon back", reqs[i][1])
		}
	}
	assert.Equal(t, 2, f.maxPerUser(t, tpl.ID))
	assert.Equal(t, coupon.Stats{Taken: rushQuantity, Issued: rushQuantity}, f.stats(t, tpl.ID))

	f.LoseIssuerState(t)
	require.NoError(t, f.Service.Recount(ctx, tpl.ID))
	assert.Equal(t, coupon.Stats{Taken: rushQuantity, Issued: rushQuantity}, f.stats(t, tpl.ID))
	_, err := f.Service.Issue(ctx, tpl.ID, "newcomer", "newcomer-1")
	assert.ErrorIs(t, err, coupon.ErrSoldOut)
	again, err := f.Service.Issue(ctx, tpl.ID, "user-0", "before-0-1")
	require.NoError(t, err)
	assert.Equal(t, before["before-0-1"].ID, again.ID)
}

// testStateLossInFlight loses the issuer's state while two coupons' SQL writes are in
// flight (held in their IssuedFunc), so that the state is rebuilt from SQL without them and
// hands their user's ordinal and their places out again before they commit. SQL still
// holds the template to its total: exactly TotalQuantity coupons exist, nobody holds more
// than the limit, the surplus requests are told "sold out", and every request asked again
// gets the same answer.
func testStateLossInFlight(t *testing.T, h Harness) {
	f := openLossy(t, h)
	if f == nil {
		return
	}
	ctx := context.Background()
	const total = 5
	tpl := f.template(t, coupon.Template{ID: "inflight", TotalQuantity: total})
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll) // before the database is dropped, should the test fail early
	issue := func(user, req string, then coupon.IssuedFunc) chan error {
		answer := make(chan error, 1)
		go func() {
			_, err := f.Service.IssueThen(ctx, tpl.ID, user, req, then)
			answer <- err
		}()
		return answer
	}
	var writing sync.WaitGroup
	var held []chan error
	for i := range 2 {
		writing.Add(1)
		held = append(held, issue(fmt.Sprint("held-", i), fmt.Sprint("held-", i), func(context.Context, bun.Tx, coupon.Coupon) error {
			writing.Done()
			<-release
			return nil
		}))
	}
	writing.Wait()
	f.LoseIssuerState(t)

	// From the state rebuilt without the held coupons: the first held user again under a
	// new request (it takes that user's ordinal 1 and place 1 again, both held by its
	// coupon in flight), then five newcomers for the four places left.
	takenReaches := func(n int64) {
		t.Helper()
		require.Eventually(t, func() bool { return f.stats(t, tpl.ID).Taken == n }, 30*time.Second, 5*time.Millisecond)
	}
	again := issue("held-0", "held-0-again", nil)
	takenReaches(1)
	var newcomers []chan error
	for i := range total {
		newcomers = append(newcomers, issue(fmt.Sprint("new-", i), fmt.Sprint("new-", i), nil))
	}
	takenReaches(total) // every place is taken
	releaseAll()

	for _, answer := range held {
		require.NoError(t, <-answer, "the held write commits")
	}
	require.ErrorIs(t, <-again, coupon.ErrSoldOut, "held-0's coupon and the newcomers' fill the total")
	won := 0
	for _, answer := range newcomers {
		if err := <-answer; err != nil {
			require.ErrorIs(t, err, coupon.ErrSoldOut)
			continue
		}
		won++
	}
	assert.Equal(t, total-len(held), won, "the newcomers won what the held coupons left")
	require.Len(t, f.durableIDs(t, tpl.ID), total, "never more than TotalQuantity coupons in SQL")
	assert.Equal(t, 1, f.maxPerUser(t, tpl.ID))
	assert.Equal(t, coupon.Stats{Taken: total, Issued: total}, f.stats(t, tpl.ID))

	for i := range held {
		f.issue(t, tpl.ID, fmt.Sprint("held-", i), fmt.Sprint("held-", i))
	}
	_, err := f.Service.Issue(ctx, tpl.ID, "late", "late")
	require.ErrorIs(t, err, coupon.ErrSoldOut)
	require.Len(t, f.durableIDs(t, tpl.ID), total)
	assert.Equal(t, coupon.Stats{Taken: total, Issued: total}, f.stats(t, tpl.ID))
}
