package outbox_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

// TestConsumersShareShuffledDeliveries: two members of one consumer (two Consumers of one
// name, as during a rebalance) are each handed the same events three times at once, in
// different orders, round after round. Every Deliver answers nil, whatever locks the
// deliveries' leases take in the database and however often their transactions collide,
// and every event is applied exactly once.
func TestConsumersShareShuffledDeliveries(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		var members [2]*outbox.Consumer
		for i := range members {
			c, err := outbox.NewConsumer(db, "c", outboxtest.RecordingHandler("c"))
			require.NoError(t, err)
			members[i] = c
		}
		events := addEvents(t, db, "t", 40, 20)
		for round := range 20 {
			batch := events[round*40 : (round+1)*40]
			var wg sync.WaitGroup
			errs := make(chan error, 3*len(members))
			for i := range 3 * len(members) {
				shuffled := append([]outbox.Event(nil), batch...)
				rand.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
				wg.Go(func() { errs <- members[i%len(members)].Deliver(context.Background(), shuffled) })
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err, "round %d", round)
			}
		}
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "c"), events)
	})
}
