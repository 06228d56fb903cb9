// Package testkit holds the small helpers the module's tests share beyond backends
// (internal/testenv) and time (internal/testclock): running work concurrently and
// asserting typed errors.
package testkit

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

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

// RequireAs asserts that err matches sentinel and is an E, and returns it.
func RequireAs[E error](t testing.TB, err error, sentinel error) E {
	t.Helper()
	require.ErrorIs(t, err, sentinel)
	var e E
	require.True(t, errors.As(err, &e), "%v is not a %T", err, e)
	return e
}
