// Package backoff holds the retry pauses shared by commercekit's packages: an exponentially
// growing bound with random jitter, so failing workers neither hammer a broken dependency
// nor retry in lockstep, and a context-aware sleep.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Equal returns the pause before retry number attempt (1-based): a random duration in
// [bound/2, bound] where bound = min(maxPause, minPause·2^(attempt-1)) ("equal jitter").
// It suits workers that retry a dependency: they always wait a while, but not in step.
func Equal(attempt int, minPause, maxPause time.Duration) time.Duration {
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

// Full returns a random pause in [0, min(maxPause, base·2^attempt)) ("full jitter"). It
// suits transactions that conflicted with each other: spreading the retries as widely as
// possible keeps them from meeting again.
func Full(attempt int, base, maxPause time.Duration) time.Duration {
	bound := min(maxPause, base<<attempt)
	if bound <= 0 {
		return 0
	}
	return rand.N(bound)
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
