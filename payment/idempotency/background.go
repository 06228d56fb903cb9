package idempotency

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/backoff"
)

// Bounds of the pauses between two background attempts, and of the attempts in flight: in a
// long outage at a high request rate each failed completion would otherwise keep a goroutine
// for a whole lock timeout; past the bound, the claim simply expires with its lock (what a
// retry of the request then meets is the documented in-doubt case, never a lost response of
// a request that succeeded: the response was returned to its caller).
const (
	retryFirstPause = 50 * time.Millisecond
	retryMaxPause   = time.Second
	maxBackground   = 1024
)

// background runs the Store's finishing work that must outlive a request: storing a
// response or releasing a claim while the backend is unavailable. It is shared by the
// copies WithBackend makes, so Close stops them all.
type background struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closing bool // set by Close: nothing new starts
	running int  // attempts in flight, at most maxBackground
}

func newBackground() *background {
	ctx, cancel := context.WithCancel(context.Background())
	return &background{ctx: ctx, cancel: cancel}
}

// start runs fn on a goroutine of its own unless the Store is closing or maxBackground
// attempts are already in flight.
func (b *background) start(fn func(ctx context.Context)) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing || b.running >= maxBackground {
		return false
	}
	b.running++
	b.wg.Add(1)
	go func() {
		defer func() {
			b.mu.Lock()
			b.running--
			b.mu.Unlock()
			b.wg.Done()
		}()
		fn(b.ctx)
	}()
	return true
}

// Close waits until the Store's background attempts (see Do) have finished or ctx is
// done, then stops those still running and returns once they have. Call it before closing
// the backend's client. A claim whose attempts were stopped expires with its lock. The
// Store stays usable, but fails over nothing to the background any more.
func (s *Store) Close(ctx context.Context) {
	s.bg.mu.Lock()
	s.bg.closing = true
	s.bg.mu.Unlock()
	finished := make(chan struct{})
	go func() { s.bg.wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-ctx.Done():
	}
	s.bg.cancel()
	<-finished
}

// retryLater runs op in the background (at once when now is set, else after a pause) and
// again while it fails with errcode.ErrUnavailable, with growing pauses, until it succeeds
// or fails otherwise, c's lock timeout has passed (real time: after that a retry of the
// request takes the key over, so op is moot) or the Store is closed. The outcome is logged.
func (s *Store) retryLater(ctx context.Context, c Claim, what string, now bool, op func(ctx context.Context) error) {
	log := s.logger.With("scope", c.Scope, "key", c.Key)
	started := s.bg.start(func(ctx context.Context) {
		bctx, cancel := context.WithTimeout(ctx, s.lockTimeout)
		defer cancel()
		for attempt := 1; ; attempt++ {
			if (attempt > 1 || !now) && backoff.Sleep(bctx, backoff.Full(attempt, retryFirstPause, retryMaxPause)) != nil {
				log.Warn("idempotency: gave up "+what+" in the background; the claim expires with its lock", "attempts", attempt-1)
				return
			}
			actx, acancel := context.WithTimeout(bctx, finishTimeout)
			err := op(actx)
			acancel()
			switch {
			case err == nil:
				log.Info("idempotency: "+what+" succeeded in the background", "attempts", attempt)
				return
			case !errors.Is(err, errcode.ErrUnavailable):
				log.Warn("idempotency: "+what+" failed in the background", "error", err)
				return
			}
		}
	})
	if !started {
		log.WarnContext(ctx, "idempotency: "+what+" failed and no background attempt can start (the store is closed, or "+
			strconv.Itoa(maxBackground)+" are in flight); the claim expires with its lock")
		return
	}
	s.report(EventDeferred)
}
