package outbox

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff returns the pause before retry number attempt (1-based): a random duration in
// [0, min(maxPause, minPause·2^(attempt-1))] with at least minPause/2 ("equal jitter"), so
// failing workers neither hammer a broken dependency nor retry in lockstep. Exported for
// saramaoutbox, which retries with the same policy.
func Backoff(attempt int, minPause, maxPause time.Duration) time.Duration {
	if maxPause <= 0 {
		return 0
	}
	bound := minPause
	for i := 1; i < attempt && bound < maxPause; i++ {
		bound *= 2
	}
	bound = min(max(bound, 1), maxPause)
	half := bound / 2
	return half + rand.N(bound-half+1)
}

// Sleep waits for d or until ctx is done, and returns ctx.Err() in the latter case.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
