package idempotencytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/payment/idempotency"
)

// Clients is how many concurrent requests the concurrency tests and benchmarks make.
const Clients = 50

// bugGuard bounds a wait that only a bug can make endless; a passing run never comes near it.
const bugGuard = 2 * time.Minute

type result struct {
	resp     idempotency.Response
	replayed bool
	err      error
}

// charge returns a Func that counts its runs and answers a response unique to each run, so
// a replay of anything but the first run's response shows.
func charge(runs *atomic.Int64) idempotency.Func {
	return func(context.Context) (idempotency.Response, error) {
		n := runs.Add(1)
		return idempotency.Response{Status: 201, Body: fmt.Appendf(nil, `{"payment":"p-1","run":%d}`, n)}, nil
	}
}

func sameResponse(t *testing.T, want, got idempotency.Response) {
	t.Helper()
	assert.Equal(t, want.Status, got.Status)
	assert.Equal(t, want.ErrorCode, got.ErrorCode)
	assert.True(t, bytes.Equal(want.Body, got.Body), "body %q, want %q", got.Body, want.Body)
}

// testConcurrentFirstRequests: Clients requests with one key race; fn runs exactly once,
// each request gets that run's response or ErrInProgress, and every request after the
// first completes gets the byte-identical stored response.
func testConcurrentFirstRequests(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	fp := idempotency.FingerprintRequest("POST", "/payments", []byte(`{"order":"o-1","amount":15000}`))
	var runs atomic.Int64
	fn := charge(&runs)

	results := make([]result, Clients)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range Clients {
		wg.Go(func() {
			<-start
			r := &results[i]
			r.resp, r.replayed, r.err = e.store.Do(ctx, "merchant-1", "key-1", fp, fn)
		})
	}
	close(start)
	wg.Wait()

	require.EqualValues(t, 1, runs.Load(), "fn must run exactly once")
	first := idempotency.Response{Status: 201, Body: []byte(`{"payment":"p-1","run":1}`)}
	ran, replays, inProgress := 0, 0, 0
	for _, r := range results {
		switch {
		case r.err == nil && !r.replayed:
			ran++
			sameResponse(t, first, r.resp)
		case r.err == nil:
			replays++
			sameResponse(t, first, r.resp)
		default:
			inProgress++
			assertKeyError(t, r.err, idempotency.ErrInProgress, "merchant-1", "key-1")
		}
	}
	assert.Equal(t, 1, ran, "exactly one request runs")
	assert.Equal(t, Clients, ran+replays+inProgress)
	t.Logf("%d requests: 1 ran, %d replayed, %d in progress", Clients, replays, inProgress)

	// After completion every retry, concurrent or not, gets the stored response.
	for i := range Clients {
		wg.Go(func() {
			r := &results[i]
			r.resp, r.replayed, r.err = e.store.Do(ctx, "merchant-1", "key-1", fp, fn)
		})
	}
	wg.Wait()
	for _, r := range results {
		require.NoError(t, r.err)
		assert.True(t, r.replayed)
		sameResponse(t, first, r.resp)
	}
	assert.EqualValues(t, 1, runs.Load())
}

// testConcurrentWhileRunning: Clients requests on a fresh key, see oneRunsOthersWait.
func testConcurrentWhileRunning(t *testing.T, h Harness) {
	e := newEnv(t, h)
	oneRunsOthersWait(t, e, "key-2", idempotency.FingerprintRequest("POST", "/payments", []byte(`{"order":"o-2"}`)))
}

// testConcurrentTakeover: Clients retries race to take over the key of a crashed request;
// exactly one does, see oneRunsOthersWait. A few rounds, as a lost compare-and-set shows
// only when the race interleaves badly.
func testConcurrentTakeover(t *testing.T, h Harness) {
	e := newEnv(t, h)
	for round := range 5 {
		key := fmt.Sprint("key-3-", round)
		_, err := e.store.Claim(t.Context(), "merchant-1", key, "fp")
		require.NoError(t, err)
		e.clock.Advance(suiteLockTimeout)
		oneRunsOthersWait(t, e, key, "fp")
	}
}

// oneRunsOthersWait sends Clients concurrent requests with one key and holds the one that
// runs inside fn until the others have returned: each of them gets ErrInProgress (a
// different fingerprint gets ErrKeyReused), and the first request's response is then
// replayed to all.
func oneRunsOthersWait(t *testing.T, e *env, key string, fp idempotency.Fingerprint) {
	ctx := t.Context()
	lockedUntil := e.clock.Now().Add(suiteLockTimeout)
	var runs atomic.Int64
	entered, proceed := make(chan struct{}), make(chan struct{})
	fn := func(ctx context.Context) (idempotency.Response, error) {
		if runs.Add(1) > 1 {
			return idempotency.Response{}, errors.New("fn ran a second time")
		}
		close(entered)
		select {
		case <-proceed:
		case <-time.After(bugGuard):
			return idempotency.Response{}, errors.New("never told to proceed: another request must have run")
		}
		return idempotency.Response{Status: 200, Body: []byte("first")}, nil
	}

	results := make(chan result, Clients)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range Clients {
		wg.Go(func() {
			<-start
			var r result
			r.resp, r.replayed, r.err = e.store.Do(ctx, "merchant-1", key, fp, fn)
			results <- r
		})
	}
	close(start)
	// The runner is held in fn, so the others all return first.
	for i := range Clients - 1 {
		select {
		case r := <-results:
			assertKeyError(t, r.err, idempotency.ErrInProgress, "merchant-1", key)
			var ke *idempotency.KeyError
			if errors.As(r.err, &ke) {
				assert.WithinDuration(t, lockedUntil, ke.LockedUntil, time.Millisecond)
			}
		case <-time.After(bugGuard):
			t.Fatalf("only %d of %d waiting requests returned", i, Clients-1)
		}
	}
	select {
	case <-entered:
	case <-time.After(bugGuard):
		t.Fatal("no request ran")
	}

	// A different request with the same key while the first runs: reused, not in progress.
	_, _, err := e.store.Do(ctx, "merchant-1", key, "another-request", fn)
	assertKeyError(t, err, idempotency.ErrKeyReused, "merchant-1", key)

	close(proceed)
	wg.Wait()
	r := <-results
	require.NoError(t, r.err)
	assert.False(t, r.replayed)
	assert.Equal(t, "first", string(r.resp.Body))

	resp, replayed, err := e.store.Do(ctx, "merchant-1", key, fp, fn)
	require.NoError(t, err)
	assert.True(t, replayed)
	assert.Equal(t, "first", string(resp.Body))
	assert.EqualValues(t, 1, runs.Load())
}

func assertKeyError(t *testing.T, err, sentinel error, scope, key string) {
	t.Helper()
	if !assert.ErrorIs(t, err, sentinel) {
		return
	}
	var ke *idempotency.KeyError
	if assert.ErrorAs(t, err, &ke) {
		assert.Equal(t, scope, ke.Scope)
		assert.Equal(t, key, ke.Key)
	}
}
