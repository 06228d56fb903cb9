package outbox_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

// TestDispatcherConformance: the in-process publisher of the embedded mode keeps the
// outbox.Publisher promise (its consumers see each event once: duplicates stop at their
// processed-events table).
func TestDispatcherConformance(t *testing.T) {
	outboxtest.RunPublisher(t, func(t *testing.T) (outbox.Publisher, string, outboxtest.Received) {
		const topic = "conformance"
		var (
			mu  sync.Mutex
			got []outbox.Event
		)
		c, err := outbox.NewConsumer(outboxtest.Prepare(t, testenv.SQLite(t)), "conformance", func(_ context.Context, _ bun.Tx, events []outbox.Event) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, events...)
			return nil
		})
		require.NoError(t, err)
		d, err := outbox.NewDispatcher(outbox.Subscription{Topic: topic, Consumer: c})
		require.NoError(t, err)
		return d, topic, func(t *testing.T, n int) []outbox.Event {
			mu.Lock()
			defer mu.Unlock()
			// Dispatcher.Publish returns after its consumers applied the batch.
			require.GreaterOrEqual(t, len(got), n)
			return append([]outbox.Event(nil), got...)
		}
	})
}
