// Package testkit holds the small helpers the module's tests share beyond backends
// (internal/testenv) and time (internal/testclock): running work concurrently, or in the
// background for the rest of a test, or checking that a constructor refuses invalid options.
package testkit

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
)

// Background runs run(ctx) on its own goroutine until the test ends; then it cancels ctx,
// waits for run to return and requires that it returned nil.
func Background(tb testing.TB, run func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		require.NoError(tb, <-done)
	})
}

// Parallel runs fn(i) for every i in [0, n) on workers goroutines and waits for them.
func Parallel(n, workers int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, workers) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		})
	}
	wg.Wait()
}

// Together runs fn(i) for every i in [0, n) on n goroutines released at the same moment,
// once all of them are running, and waits for them: the most contention n calls can make.
func Together(n int, fn func(i int)) {
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	for i := range n {
		done.Go(func() {
			ready.Done()
			<-start
			fn(i)
		})
	}
	ready.Wait()
	close(start)
	done.Wait()
}

// Must returns a function giving v to a test after requiring that err is nil: the getters
// of test fixtures read one value each, as in
//
//	func (e *env) order(t *testing.T, id string) Order {
//		t.Helper()
//		return testkit.Must(e.svc.Get(ctx, id))(t)
//	}
func Must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		require.NoError(t, err)
		return v
	}
}

// RefusesBadOptions requires that construct, given each option of bad on its own, returns
// no value and an *errcode.InvalidError (matching errcode.ErrInvalidArgument) whose Field is
// the option's name and whose message shows the value. bad's keys are "Name: value", as
// the message says them: "WithSweepBatch: 0". The error must match the package's sentinels
// too, when given (commerce.ErrInvalidConfig, ...).
func RefusesBadOptions[O any, T any](t *testing.T, construct func(...O) (*T, error), bad map[string]O, sentinels ...error) {
	t.Helper()
	for want, opt := range bad {
		v, err := construct(opt)
		require.ErrorIs(t, err, errcode.ErrInvalidArgument, want)
		for _, s := range sentinels {
			require.ErrorIs(t, err, s, want)
		}
		assert.Nil(t, v, want)
		assert.Equal(t, strings.SplitN(want, ":", 2)[0], errcode.FieldOf(err), want)
		assert.Contains(t, err.Error(), want)
	}
}

// Statements is a bun query hook (db.WithQueryHook) counting the statements a database is
// sent, BEGIN, COMMIT and ROLLBACK included, and the transactions begun.
type Statements struct{ All, Begins atomic.Int64 }

// BeforeQuery implements bun.QueryHook.
func (s *Statements) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context { return ctx }

// AfterQuery implements bun.QueryHook.
func (s *Statements) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	s.All.Add(1)
	if e.Query == "BEGIN" {
		s.Begins.Add(1)
	}
}

// AllUnavailable calls every call (named by its key), made while a dependency is down, and
// checks that each fails with an error matching errcode.ErrUnavailable: "retry later", not a
// bug and not a business answer.
func AllUnavailable(t *testing.T, calls map[string]func() error) {
	t.Helper()
	for name, call := range calls {
		err := call()
		require.Error(t, err, name)
		assert.ErrorIs(t, err, errcode.ErrUnavailable, "%s: %v", name, err)
	}
}
