package idempotencytest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/observe"
	"github.com/commercekit/commercekit/payment/idempotency"
)

// forgetful wraps the backend under test and can lose the record of a claim, as a backend
// that lost its data does (a Redis restarted without persistence): forget deletes the
// record of the last claim made on a key through it, whatever request holds it. Its first
// failCompletes completions instead lose the record and fail as unavailable: the backend
// went down while fn ran and came back empty.
type forgetful struct {
	idempotency.Backend
	mu            sync.Mutex
	tokens        map[idempotency.Ref]string
	failCompletes atomic.Int64
}

func newForgetful(b idempotency.Backend) *forgetful {
	return &forgetful{Backend: b, tokens: map[idempotency.Ref]string{}}
}

func (b *forgetful) Claim(ctx context.Context, q idempotency.ClaimRequest) (idempotency.ClaimOutcome, *idempotency.Record, error) {
	o, r, err := b.Backend.Claim(ctx, q)
	if err == nil && (o == idempotency.ClaimCreated || o == idempotency.ClaimTakenOver) {
		b.mu.Lock()
		b.tokens[q.Ref] = q.Token
		b.mu.Unlock()
	}
	return o, r, err
}

func (b *forgetful) Complete(ctx context.Context, q idempotency.CompleteRequest) error {
	if b.failCompletes.Add(-1) >= 0 {
		if err := b.forget(ctx, q.Ref); err != nil {
			return err
		}
		return lost(nil)
	}
	return b.Backend.Complete(ctx, q)
}

// forget deletes the record of the last claim of ref.
func (b *forgetful) forget(ctx context.Context, ref idempotency.Ref) error {
	b.mu.Lock()
	tok := b.tokens[ref]
	b.mu.Unlock()
	return b.Backend.Release(ctx, ref, tok)
}

// forgetfulEnv returns a store on e's backend wrapped in a forgetful, reporting to obs.
func forgetfulEnv(t *testing.T, e *env, obs idempotency.Observer) (*idempotency.Store, *forgetful) {
	t.Helper()
	b := newForgetful(e.backend)
	store, err := idempotency.New(b, idempotency.WithClock(e.clock.Now), idempotency.WithLockTimeout(suiteLockTimeout),
		idempotency.WithRetention(suiteRetention), idempotency.WithObserver(obs))
	require.NoError(t, err)
	return store, b
}

// names returns the names of the events rec was told of since from, and the new mark.
func names(rec *observe.Recorder, from int) ([]string, int) {
	evs := rec.Events()
	var got []string
	for _, ev := range evs[from:] {
		got = append(got, ev.Name)
	}
	return got, len(evs)
}

// testRecordLostWhileRunning: the record of a running request's claim is lost (the backend
// lost its data). With nobody else holding the key, Do answers fn's response and stores
// it, and a retry gets it replayed; with another request holding it (running, or done,
// with the same or another fingerprint), Do answers ErrLockLost and the other request's
// answer is kept. Either way the Observer hears of this one request once: it claimed the
// key once (its second claim, made only to store what it did, is no request of its own),
// and no other request was replayed, refused as in progress or as reusing a key.
func testRecordLostWhileRunning(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	rec := &observe.Recorder{}
	store, b := forgetfulEnv(t, e, rec)
	mark := 0
	var runs atomic.Int64
	forgetting := func(key string, then func()) idempotency.Func {
		return func(ctx context.Context) (idempotency.Response, error) {
			runs.Add(1)
			require.NoError(t, b.forget(ctx, idempotency.Ref{Scope: "s", Key: key}))
			if then != nil {
				then()
			}
			return idempotency.Response{Status: 201, Body: []byte("mine " + key)}, nil
		}
	}

	// Nobody else: stored under a new claim.
	resp, replayed, err := store.Do(ctx, "s", "gone", "fp", forgetting("gone", nil))
	require.NoError(t, err)
	assert.False(t, replayed)
	assert.Equal(t, "mine gone", string(resp.Body))
	got, mark := names(rec, mark)
	assert.Equal(t, []string{"claimed", "lock_lost", "completed"}, got, "the record gone")
	e.requireReplayed(t, "gone", resp)

	// Another request came meanwhile: its answer is the key's.
	other := func(key string, fp idempotency.Fingerprint) func() {
		return func() {
			_, _, err := e.store.Do(ctx, "s", key, fp, func(context.Context) (idempotency.Response, error) {
				return idempotency.Response{Status: 201, Body: []byte("other " + key)}, nil
			})
			require.NoError(t, err)
		}
	}
	for _, tc := range []struct {
		key   string
		fp    idempotency.Fingerprint
		event string
	}{
		{"same-done", "fp", "replayed"},
		{"other-done", "other-fp", "key_reused"},
	} {
		_, _, err := store.Do(ctx, "s", tc.key, "fp", forgetting(tc.key, other(tc.key, tc.fp)))
		assertKeyError(t, err, idempotency.ErrLockLost, "s", tc.key)
		got, mark = names(rec, mark)
		assert.Equal(t, []string{"claimed", "lock_lost"}, got, "%s: no request was %s", tc.key, tc.event)
		c, err := e.store.Claim(ctx, "s", tc.key, tc.fp)
		require.NoError(t, err)
		require.True(t, c.Replayed, tc.key)
		assert.Equal(t, "other "+tc.key, string(c.Response.Body))
	}

	var running idempotency.Claim
	_, _, err = store.Do(ctx, "s", "running", "fp", forgetting("running", func() {
		var err error
		running, err = e.store.Claim(ctx, "s", "running", "fp")
		require.NoError(t, err)
	}))
	assertKeyError(t, err, idempotency.ErrLockLost, "s", "running")
	got, _ = names(rec, mark)
	assert.Equal(t, []string{"claimed", "lock_lost"}, got, "running: no request was refused in progress")
	_, err = e.store.Claim(ctx, "s", "running", "fp")
	assertKeyError(t, err, idempotency.ErrInProgress, "s", "running")
	require.NoError(t, e.store.Complete(ctx, running, idempotency.Response{Status: 201, Body: []byte("other running")}))
	e.requireReplayed(t, "running", idempotency.Response{Status: 201, Body: []byte("other running")})
	assert.EqualValues(t, 4, runs.Load())
}

// testRecordLostWhileUnavailable: the backend goes down while fn runs and comes back
// without the claim's record (a Redis restarted empty). Do answers fn's response and keeps
// storing it in the background; the record being gone, the background stores it under a
// new claim, as Do does when the backend answers at once, so a retry gets it replayed
// instead of running fn a second time.
func testRecordLostWhileUnavailable(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	store, b := forgetfulEnv(t, e, observe.Nop{})
	b.failCompletes.Store(1)
	var runs atomic.Int64
	resp, replayed, err := store.Do(ctx, "s", "k", "fp", charge(&runs))
	require.NoError(t, err, "work that was done is not reported as failed")
	assert.False(t, replayed)
	store.Close(ctx) // waits for the background completion

	again, replayed, err := e.store.Do(ctx, "s", "k", "fp", charge(&runs))
	require.NoError(t, err)
	assert.True(t, replayed, "the response was stored")
	sameResponse(t, resp, again)
	assert.EqualValues(t, 1, runs.Load(), "fn ran once")
}

// testTakerCrashedToo: fn outlives its lock, another request takes the key over and
// crashes in turn (its lock expires too). Nobody holds the key any more: Do stores fn's
// response under a claim of its own (taking the key over) and answers it; a retry gets it
// replayed, and the crashed taker, should it come back, is fenced.
func testTakerCrashedToo(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	var taker idempotency.Claim
	resp, replayed, err := e.store.Do(ctx, "s", "k", "fp", func(context.Context) (idempotency.Response, error) {
		taker = e.takeOver(t, "k")
		e.clock.Advance(suiteLockTimeout) // the taker crashed: its lock expires
		return idempotency.Response{Status: 201, Body: []byte("first")}, nil
	})
	require.NoError(t, err)
	assert.False(t, replayed)
	assert.Equal(t, "first", string(resp.Body))
	e.requireReplayed(t, "k", resp)
	assertKeyError(t, e.store.Complete(ctx, taker, idempotency.Response{Status: 201, Body: []byte("taker")}), idempotency.ErrLockLost, "s", "k")
	e.requireReplayed(t, "k", resp)
}
