// Package testkit holds the small helpers the module's tests share beyond backends
// (internal/testenv) and time (internal/testclock): running work concurrently.
package testkit

import (
	"sync"
	"sync/atomic"
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
