// Package idempotencytest is the conformance suite of idempotency backends. A backend's
// conformance_test.go runs it against a real server:
//
//	func TestConformance(t *testing.T) {
//		idempotencytest.Run(t, idempotencytest.Harness{
//			NewBackend: func(tb testing.TB) idempotency.Backend { ... a fresh, empty backend ... },
//		})
//	}
//
// and its benchmarks call Benchmark with the same harness. A new backend is done when it
// passes the suite.
package idempotencytest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/payment/idempotency"
)

// Harness tells the suite how to get the backend under test and what it can do.
type Harness struct {
	// NewBackend returns a fresh, empty backend of its own for one test or benchmark,
	// failing tb when it cannot.
	NewBackend func(tb testing.TB) idempotency.Backend

	// ExpiresByItself is true when the backend's storage deletes expired records on its
	// own (Redis key TTLs) and its Purge therefore returns 0.
	ExpiresByItself bool
}

// The suite's settings: short, distinct from the defaults, so the options are exercised.
const (
	suiteLockTimeout = 10 * time.Second
	suiteRetention   = time.Hour
)

// suiteStart has a sub-second part, so time formats and truncation to the backends'
// precision (Redis milliseconds, SQL microseconds) are exercised at every boundary.
var suiteStart = time.Date(2026, 3, 1, 9, 0, 0, 123_456_000, time.UTC)

// env is one test's store on a fresh backend with a manual clock.
type env struct {
	h       Harness
	backend idempotency.Backend
	store   *idempotency.Store
	clock   *testclock.Clock
}

func newEnv(t *testing.T, h Harness, opts ...idempotency.Option) *env {
	t.Helper()
	e := &env{h: h, backend: h.NewBackend(t), clock: testclock.New(suiteStart)}
	opts = append([]idempotency.Option{
		idempotency.WithClock(e.clock.Now),
		idempotency.WithLockTimeout(suiteLockTimeout),
		idempotency.WithRetention(suiteRetention),
	}, opts...)
	s, err := idempotency.New(e.backend, opts...)
	require.NoError(t, err)
	e.store = s
	return e
}

// Run runs the conformance suite against the backends h makes.
func Run(t *testing.T, h Harness) {
	require.NotNil(t, h.NewBackend, "Harness.NewBackend")
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Options", testOptions},
		{"Validation", testValidation},
		{"ConcurrentFirstRequests", testConcurrentFirstRequests},
		{"ConcurrentWhileRunning", testConcurrentWhileRunning},
		{"ConcurrentTakeover", testConcurrentTakeover},
		{"ReplayIsByteIdentical", testReplayIsByteIdentical},
		{"KeyReusedAfterCompletion", testKeyReusedAfterCompletion},
		{"TransientFailureReleases", testTransientFailureReleases},
		{"FnDeadlineWithinLock", testFnDeadlineWithinLock},
		{"CrashTakeover", testCrashTakeover},
		{"Fencing", testFencing},
		{"FencingInsideDo", testFencingInsideDo},
		{"Retention", testRetention},
		{"Purge", testPurge},
		{"ScopesIsolate", testScopesIsolate},
		{"Observer", testObserver},
		{"CompleteIsIdempotent", testCompleteIsIdempotent},
		{"LostCompletionReply", testLostCompletionReply},
		{"LostClaimReply", testLostClaimReply},
		{"RecordLostWhileRunning", testRecordLostWhileRunning},
		{"RecordLostWhileUnavailable", testRecordLostWhileUnavailable},
		{"TakerCrashedToo", testTakerCrashedToo},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

// requireReplayed checks that a retry of the request with key "k" in scope "s" (fingerprint
// "fp") gets want replayed, without running.
func (e *env) requireReplayed(t *testing.T, key string, want idempotency.Response, msgAndArgs ...any) {
	t.Helper()
	got, replayed, err := e.store.Do(t.Context(), "s", key, "fp", mustNotRun(t))
	require.NoError(t, err)
	assert.True(t, replayed, msgAndArgs...)
	sameResponse(t, want, got)
}
