package backoff_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/commercekit/commercekit/internal/backoff"
)

func TestEqual(t *testing.T) {
	for attempt, bound := range map[int]time.Duration{1: 10 * time.Millisecond, 2: 20 * time.Millisecond, 3: 40 * time.Millisecond, 10: 100 * time.Millisecond} {
		for range 200 {
			d := backoff.Equal(attempt, 10*time.Millisecond, 100*time.Millisecond)
			assert.GreaterOrEqual(t, d, bound/2, "attempt %d", attempt)
			assert.LessOrEqual(t, d, bound, "attempt %d", attempt)
		}
	}
	assert.Zero(t, backoff.Equal(3, time.Millisecond, 0))
}

func TestFull(t *testing.T) {
	for attempt, bound := range map[int]time.Duration{1: 4 * time.Millisecond, 3: 16 * time.Millisecond, 20: 250 * time.Millisecond} {
		for range 200 {
			d := backoff.Full(attempt, 2*time.Millisecond, 250*time.Millisecond)
			assert.GreaterOrEqual(t, d, time.Duration(0))
			assert.Less(t, d, bound, "attempt %d", attempt)
		}
	}
}

func TestSleep(t *testing.T) {
	assert.NoError(t, backoff.Sleep(context.Background(), time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, backoff.Sleep(ctx, time.Hour), context.Canceled)
	assert.ErrorIs(t, backoff.Sleep(ctx, 0), context.Canceled)
}
