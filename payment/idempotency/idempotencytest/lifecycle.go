package idempotencytest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/observe"
	"github.com/commercekit/commercekit/payment/idempotency"
)

func testOptions(t *testing.T, h Harness) {
	b := h.NewBackend(t)
	for _, tc := range []struct {
		name  string
		b     idempotency.Backend
		opts  []idempotency.Option
		field string
	}{
		{"nil backend", nil, nil, "backend"},
		{"zero lock timeout", b, []idempotency.Option{idempotency.WithLockTimeout(0)}, "WithLockTimeout"},
		{"zero retention", b, []idempotency.Option{idempotency.WithRetention(0)}, "WithRetention"},
		// Below the backends' resolution a key would expire as it is stored: no replay.
		{"lock timeout under a millisecond", b, []idempotency.Option{idempotency.WithLockTimeout(time.Millisecond - 1), idempotency.WithRetention(2 * time.Millisecond)}, "WithLockTimeout"},
		{"retention not above lock timeout", b, []idempotency.Option{idempotency.WithLockTimeout(time.Minute), idempotency.WithRetention(time.Minute)}, "WithRetention"},
		{"nil clock", b, []idempotency.Option{idempotency.WithClock(nil)}, "WithClock"},
		{"nil logger", b, []idempotency.Option{idempotency.WithLogger(nil)}, "WithLogger"},
		{"nil observer", b, []idempotency.Option{idempotency.WithObserver(nil)}, "WithObserver"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := idempotency.New(tc.b, tc.opts...)
			assert.Nil(t, s)
			var ie *idempotency.InvalidError
			require.ErrorAs(t, err, &ie)
			assert.ErrorIs(t, err, idempotency.ErrInvalid)
			assert.Equal(t, tc.field, ie.Field)
		})
	}
	s, err := idempotency.New(b)
	require.NoError(t, err)
	assert.Equal(t, idempotency.DefaultLockTimeout, s.LockTimeout())
	assert.Equal(t, b.JoinsTx(), s.JoinsTx())
}

// testValidation: malformed scopes, keys, fingerprints and responses are refused with an
// *InvalidError before anything runs or is stored; the limits themselves are accepted and
// stored faithfully; keys differing only by case or trailing space are different keys.
func testValidation(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	var runs atomic.Int64
	fn := charge(&runs)
	long := strings.Repeat("가", idempotency.MaxKeyLength)
	for _, tc := range []struct {
		name, scope, key string
		fp               idempotency.Fingerprint
		field            string
	}{
		{"empty scope", "", "k", "fp", "scope"},
		{"empty key", "s", "", "fp", "key"},
		{"key too long", "s", long + "x", "fp", "key"},
		{"scope too long", long + "x", "k", "fp", "scope"},
		{"key not UTF-8", "s", "k\xff", "fp", "key"},
		{"key with control character", "s", "k\n", "fp", "key"},
		{"empty fingerprint", "s", "k", "", "fingerprint"},
		{"fingerprint too long", "s", "k", idempotency.Fingerprint(strings.Repeat("f", idempotency.MaxFingerprintLength+1)), "fingerprint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := e.store.Do(ctx, tc.scope, tc.key, tc.fp, fn)
			var ie *idempotency.InvalidError
			require.ErrorAs(t, err, &ie)
			assert.ErrorIs(t, err, idempotency.ErrInvalid)
			assert.Equal(t, tc.field, ie.Field)
			status, ok := idempotency.HTTPStatus(err)
			assert.True(t, ok)
			assert.Equal(t, 400, status)
		})
	}
	require.Zero(t, runs.Load(), "fn must not run for a malformed request")

	// The limits hold, and what is stored comes back exactly.
	maxFP := idempotency.Fingerprint(strings.Repeat("f", idempotency.MaxFingerprintLength))
	for range 2 {
		resp, _, err := e.store.Do(ctx, long, long, maxFP, fn)
		require.NoError(t, err)
		assert.Equal(t, `{"payment":"p-1","run":1}`, string(resp.Body))
	}
	// Keys are compared exactly: no case folding, no trailing-space padding.
	for _, key := range []string{"Key", "key", "key ", "KEY"} {
		_, replayed, err := e.store.Do(ctx, "s", key, "fp", fn)
		require.NoError(t, err)
		assert.False(t, replayed, key)
	}
	assert.EqualValues(t, 5, runs.Load())

	// A malformed response is refused and the key released.
	_, _, err := e.store.Do(ctx, "s", "bad-response", "fp", func(context.Context) (idempotency.Response, error) {
		return idempotency.Response{Status: 1000}, nil
	})
	require.ErrorIs(t, err, idempotency.ErrInvalid)
	_, replayed, err := e.store.Do(ctx, "s", "bad-response", "other-fp", fn)
	require.NoError(t, err)
	assert.False(t, replayed)

	// Finishing a claim that holds nothing is a caller bug.
	c, err := e.store.Claim(ctx, "s", "bad-response", "other-fp")
	require.NoError(t, err)
	require.True(t, c.Replayed)
	require.ErrorIs(t, e.store.Complete(ctx, c, idempotency.Response{}), idempotency.ErrInvalid)
	require.ErrorIs(t, e.store.Release(ctx, idempotency.Claim{}), idempotency.ErrInvalid)
}

// testReplayIsByteIdentical: successes and business failures, empty, binary and large
// bodies are all replayed exactly.
func testReplayIsByteIdentical(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	for _, tc := range []struct {
		name string
		resp idempotency.Response
	}{
		{"success", idempotency.Response{Status: 201, Body: []byte(`{"payment":"p-1","status":"APPROVED"}`)}},
		{"business failure", idempotency.Response{Status: 402, ErrorCode: "card_declined", Body: []byte(`{"error":"card_declined"}`)}},
		{"no body, no status", idempotency.Response{}},
		{"binary body", idempotency.Response{Status: 200, Body: binary}},
		{"large body", idempotency.Response{Status: 200, Body: bytes.Repeat([]byte("0123456789abcdef"), 1<<16)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runs := 0
			fn := func(context.Context) (idempotency.Response, error) { runs++; return tc.resp, nil }
			got, replayed, err := e.store.Do(ctx, "s", tc.name, "fp", fn)
			require.NoError(t, err)
			require.False(t, replayed)
			sameResponse(t, tc.resp, got)
			for range 2 {
				got, replayed, err = e.store.Do(ctx, "s", tc.name, "fp", fn)
				require.NoError(t, err)
				assert.True(t, replayed)
				sameResponse(t, tc.resp, got)
				assert.Equal(t, tc.resp.Failed(), got.Failed())
			}
			assert.Equal(t, 1, runs)
		})
	}
}

// testKeyReusedAfterCompletion: a different request with a completed key is refused and
// leaves the stored response as it was.
func testKeyReusedAfterCompletion(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	var runs atomic.Int64
	fp1 := idempotency.FingerprintRequest("POST", "/payments", []byte(`{"amount":15000}`))
	fp2 := idempotency.FingerprintRequest("POST", "/payments", []byte(`{"amount":20000}`))
	first, _, err := e.store.Do(ctx, "s", "k", fp1, charge(&runs))
	require.NoError(t, err)

	_, _, err = e.store.Do(ctx, "s", "k", fp2, charge(&runs))
	assertKeyError(t, err, idempotency.ErrKeyReused, "s", "k")
	status, _ := idempotency.HTTPStatus(err)
	assert.Equal(t, 422, status)

	got, replayed, err := e.store.Do(ctx, "s", "k", fp1, charge(&runs))
	require.NoError(t, err)
	assert.True(t, replayed)
	sameResponse(t, first, got)
	assert.EqualValues(t, 1, runs.Load())
}

// testTransientFailureReleases: an error from fn, a cancelled context or a panic store
// nothing and free the key at once, for any request.
func testTransientFailureReleases(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	var runs atomic.Int64
	errRetryLater := errors.New("PG unavailable, retry later")

	_, _, err := e.store.Do(ctx, "s", "k", "fp-1", func(context.Context) (idempotency.Response, error) {
		return idempotency.Response{Status: 503}, errRetryLater
	})
	require.Equal(t, errRetryLater, err, "fn's error is returned unchanged")

	cctx, cancel := context.WithCancel(ctx)
	_, _, err = e.store.Do(cctx, "s", "k", "fp-2", func(ctx context.Context) (idempotency.Response, error) {
		cancel()
		return idempotency.Response{}, ctx.Err()
	})
	require.Equal(t, context.Canceled, err)

	require.PanicsWithValue(t, "boom", func() {
		_, _, _ = e.store.Do(ctx, "s", "k", "fp-3", func(context.Context) (idempotency.Response, error) { panic("boom") })
	})

	// Each failure released the key (with a cancelled caller context too): a request with
	// yet another fingerprint runs.
	resp, replayed, err := e.store.Do(ctx, "s", "k", "fp-4", charge(&runs))
	require.NoError(t, err)
	assert.False(t, replayed)
	assert.Equal(t, 201, resp.Status)
	assert.EqualValues(t, 1, runs.Load())
}

// testFnDeadlineWithinLock: fn's context expires no later than its claim.
func testFnDeadlineWithinLock(t *testing.T, h Harness) {
	e := newEnv(t, h)
	_, _, err := e.store.Do(t.Context(), "s", "k", "fp", func(ctx context.Context) (idempotency.Response, error) {
		dl, ok := ctx.Deadline()
		require.True(t, ok, "fn's context has a deadline")
		assert.False(t, dl.After(time.Now().Add(suiteLockTimeout)), "deadline %v is beyond the lock timeout", dl)
		return idempotency.Response{}, nil
	})
	require.NoError(t, err)
}

// testScopesIsolate: one key in two scopes names two independent records, and the
// encoding of (scope, key) is unambiguous.
func testScopesIsolate(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ctx := t.Context()
	refs := []idempotency.Ref{{Scope: "alice", Key: "order-1"}, {Scope: "bob", Key: "order-1"}, {Scope: "a", Key: "b:c"}, {Scope: "a:b", Key: "c"}}
	var wg sync.WaitGroup
	for _, r := range refs {
		wg.Go(func() {
			resp, replayed, err := e.store.Do(ctx, r.Scope, r.Key, idempotency.Fingerprint("fp-"+r.Scope), func(context.Context) (idempotency.Response, error) {
				return idempotency.Response{Status: 200, Body: []byte(r.Scope + "/" + r.Key)}, nil
			})
			assert.NoError(t, err)
			assert.False(t, replayed, "%+v", r)
			assert.Equal(t, r.Scope+"/"+r.Key, string(resp.Body))
		})
	}
	wg.Wait()
	for _, r := range refs {
		resp, replayed, err := e.store.Do(ctx, r.Scope, r.Key, idempotency.Fingerprint("fp-"+r.Scope), mustNotRun(t))
		require.NoError(t, err)
		assert.True(t, replayed)
		assert.Equal(t, r.Scope+"/"+r.Key, string(resp.Body))
	}
	_, _, err := e.store.Do(ctx, "bob", "order-1", "fp-alice", mustNotRun(t))
	assertKeyError(t, err, idempotency.ErrKeyReused, "bob", "order-1")
}

// mustNotRun returns a Func that fails the test if it runs.
func mustNotRun(t *testing.T) idempotency.Func {
	return func(context.Context) (idempotency.Response, error) {
		t.Error("fn ran, but the request should have been answered without it")
		return idempotency.Response{}, errors.New("must not run")
	}
}

// testObserver: every outcome is reported once.
func testObserver(t *testing.T, h Harness) {
	rec := &observe.Recorder{}
	e := newEnv(t, h, idempotency.WithObserver(rec))
	ctx := t.Context()
	var runs atomic.Int64
	_, _, err := e.store.Do(ctx, "s", "k", "fp", charge(&runs))
	require.NoError(t, err)
	_, _, err = e.store.Do(ctx, "s", "k", "fp", charge(&runs))
	require.NoError(t, err)
	_, _, _ = e.store.Do(ctx, "s", "k", "other", charge(&runs))
	_, _, _ = e.store.Do(ctx, "s", "k2", "fp", func(context.Context) (idempotency.Response, error) {
		return idempotency.Response{}, errors.New("transient")
	})
	old, err := e.store.Claim(ctx, "s", "k3", "fp")
	require.NoError(t, err)
	_, err = e.store.Claim(ctx, "s", "k3", "fp")
	require.ErrorIs(t, err, idempotency.ErrInProgress)
	e.clock.Advance(suiteLockTimeout)
	_, err = e.store.Claim(ctx, "s", "k3", "fp")
	require.NoError(t, err)
	require.ErrorIs(t, e.store.Complete(ctx, old, idempotency.Response{}), idempotency.ErrLockLost)

	var got []string
	for _, ev := range rec.Events() {
		got = append(got, ev.Name)
	}
	assert.Equal(t, []string{
		"claimed", "completed",
		"replayed",
		"key_reused",
		"claimed", "released",
		"claimed", "in_progress", "taken_over", "lock_lost",
	}, got)
	assert.Equal(t, "taken_over", idempotency.EventTakenOver.String())
}
