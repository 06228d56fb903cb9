package idempotency

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestBackgroundBounded: at most maxBackground attempts run at once; a slot frees when one
// ends, and nothing starts once closing.
func TestBackgroundBounded(t *testing.T) {
	b := newBackground()
	release := make(chan struct{})
	for i := range maxBackground {
		if !b.start(func(context.Context) { <-release }) {
			t.Fatalf("attempt %d refused below the bound", i)
		}
	}
	assert.False(t, b.start(func(context.Context) {}), "the bound is reached")
	close(release)
	b.wg.Wait()
	done := make(chan struct{})
	assert.True(t, b.start(func(context.Context) { close(done) }), "slots free when attempts end")
	<-done
	b.wg.Wait()
	b.mu.Lock()
	b.closing = true
	b.mu.Unlock()
	assert.False(t, b.start(func(context.Context) {}))
}
