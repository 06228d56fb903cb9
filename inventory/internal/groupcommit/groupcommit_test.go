package groupcommit_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/internal/groupcommit"
)

// Example: a store's Run answers every call of a batch; a reservation that finds nothing
// in progress runs at once, alone.
func Example() {
	m := groupcommit.New(func(ctx context.Context, calls []*groupcommit.Call, ready func()) {
		for _, c := range calls {
			c.Out = c.R // a store would reserve here, in one transaction or script call
		}
	})
	r, err := m.Reserve(context.Background(), "sku-1", inventory.Reservation{ID: "r1"})
	fmt.Println(r.ID, err)
	fmt.Println(m.Stats())
	// Output:
	// r1 <nil>
	// 1 1
}

var errOdd = errors.New("odd")

// TestBatchesKeepAnswers: calls that queue behind a slow batch go together in the next,
// each with its own answer (a failure fails only its caller), a second call with one ID
// waits for a later batch, and a caller that gives up while queued gets its context's
// error without failing the others.
func TestBatchesKeepAnswers(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	m := groupcommit.New(func(ctx context.Context, calls []*groupcommit.Call, ready func()) {
		ids := map[string]bool{}
		for _, c := range calls {
			require.False(t, ids[c.R.ID], "two calls with one ID in a batch")
			ids[c.R.ID] = true
			if n, _ := strconv.Atoi(c.R.ID); n%2 == 1 {
				c.Err = errOdd
			} else {
				c.Out = c.R
			}
		}
		mu.Lock()
		sizes = append(sizes, len(calls))
		mu.Unlock()
		time.Sleep(5 * time.Millisecond) // what arrives meanwhile queues
		ready()
	})
	const n = 60
	errs := make([]error, n+2)
	outs := make([]inventory.Reservation, n+2)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	var wg sync.WaitGroup
	for i := range n + 2 {
		wg.Go(func() {
			ctx, id := context.Background(), strconv.Itoa(i%n) // n, n+1: the IDs 0 and 1 again
			if i == n+1 {
				ctx = cancelled
			}
			outs[i], errs[i] = m.Reserve(ctx, "k", inventory.Reservation{ID: id})
		})
	}
	wg.Wait()
	for i := range n + 1 {
		if i%n%2 == 1 {
			require.ErrorIs(t, errs[i], errOdd, i)
			continue
		}
		require.NoError(t, errs[i], i)
		assert.Equal(t, strconv.Itoa(i%n), outs[i].ID)
	}
	if errs[n+1] != nil { // it may have led at once, before noticing; else it gave up queued
		require.ErrorIs(t, errs[n+1], context.Canceled)
	}
	batches, calls := m.Stats()
	assert.Less(t, batches, calls, "calls shared batches: %v", sizes)
}

// TestLanes: with n lanes, up to n batches of one key are in progress at once, and calls
// with one ID never meet in two batches at the same time (they hash to one lane).
func TestLanes(t *testing.T) {
	const lanes = 4
	var (
		mu            sync.Mutex
		inFlight, top int
		live          = map[string]bool{}
	)
	m := groupcommit.New(func(ctx context.Context, calls []*groupcommit.Call, ready func()) {
		mu.Lock()
		inFlight++
		top = max(top, inFlight)
		for _, c := range calls {
			assert.False(t, live[c.R.ID], "%s in two batches at once", c.R.ID)
			live[c.R.ID] = true
		}
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		inFlight--
		for _, c := range calls {
			delete(live, c.R.ID)
			c.Out = c.R
		}
		mu.Unlock()
	})
	m.SetLanes(lanes)
	var wg sync.WaitGroup
	for i := range 400 {
		wg.Go(func() {
			r, err := m.Reserve(context.Background(), "sku", inventory.Reservation{ID: strconv.Itoa(i % 40)})
			assert.NoError(t, err)
			assert.Equal(t, strconv.Itoa(i%40), r.ID)
		})
	}
	wg.Wait()
	assert.Greater(t, top, 1, "lanes run batches side by side")
	assert.LessOrEqual(t, top, lanes)
}

// TestResolveCarriesItsCall: Resolve hands the batch the ID, the state asked for and the
// time, and returns the state the batch answered, or its error.
func TestResolveCarriesItsCall(t *testing.T) {
	now := time.Now()
	m := groupcommit.New(func(ctx context.Context, calls []*groupcommit.Call, ready func()) {
		for _, c := range calls {
			if c.R.ID == "missing" {
				c.Err = inventory.NotFound(c.R.ID)
				continue
			}
			assert.Equal(t, inventory.StateCommitted, c.R.State)
			assert.True(t, now.Equal(c.R.ResolvedAt))
			c.Out.State = inventory.StateExpired
		}
	})
	st, err := m.Resolve(context.Background(), "", "r1", inventory.StateCommitted, now)
	require.NoError(t, err)
	assert.Equal(t, inventory.StateExpired, st)
	_, err = m.Resolve(context.Background(), "", "missing", inventory.StateCommitted, now)
	require.ErrorIs(t, err, inventory.ErrReservationNotFound)
}
