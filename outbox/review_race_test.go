package outbox_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

// TestRedriveAndSkipRacingSeveralRelays runs three relays on MariaDB (FOR UPDATE SKIP
// LOCKED) while writers keep adding events to the same streams and an operator redrives
// (after fixing the cause) or skips each dead letter as soon as it appears. In the end
// every event is published exactly once, in its stream's order, except the skipped ones,
// which never are.
func TestRedriveAndSkipRacingSeveralRelays(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.MySQL(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const keys, perKey = 6, 24
	id := func(k, i int) string { return fmt.Sprintf("key-%d-%02d", k, i) }
	pub := &refusingPublisher{refuse: map[string]bool{}}
	skipped := map[string]bool{}
	for k := range keys {
		for _, i := range []int{3, 4, 15} { // seq i+1: two in a row early, one among the late writes
			pub.refuse[id(k, i)] = true
			if k%2 == 1 && i != 4 {
				skipped[id(k, i)] = true
			}
		}
	}
	add := func(from, to int) {
		for i := from; i < to; i++ {
			for k := range keys {
				_, err := outbox.Add(ctx, db, outbox.Event{ID: id(k, i), Topic: "orders", Key: fmt.Sprintf("key-%d", k),
					Type: "test.happened", Payload: payload(map[string]int{"i": i})})
				if err != nil && ctx.Err() == nil {
					t.Errorf("add %s: %v", id(k, i), err)
				}
			}
		}
	}
	refused := len(pub.refuse)
	add(0, perKey/2)

	var relays []*outbox.Relay
	var wg sync.WaitGroup
	for range 3 {
		r, err := outbox.NewRelay(db, pub, outbox.WithBatchSize(5), outbox.WithInterval(2*time.Millisecond),
			outbox.WithBackoff(time.Millisecond, 5*time.Millisecond))
		require.NoError(t, err)
		relays = append(relays, r)
		wg.Go(func() { _ = r.Run(ctx) })
	}
	var writer sync.WaitGroup
	writer.Go(func() { add(perKey/2, perKey) })
	// The operator: redrive (cause fixed) or skip each dead letter once it shows up.
	handled := map[string]bool{}
	deadline := time.Now().Add(2 * time.Minute)
	for len(handled) < refused && time.Now().Before(deadline) {
		dead, err := relays[0].DeadLetters(ctx, 0)
		require.NoError(t, err)
		for _, dl := range dead {
			r := relays[len(handled)%len(relays)]
			if skipped[dl.ID] {
				require.NoError(t, r.Skip(ctx, dl.ID))
			} else {
				pub.accept(dl.ID)
				require.NoError(t, r.Redrive(ctx, dl.ID))
			}
			handled[dl.ID] = true
			require.ErrorIs(t, r.Skip(ctx, dl.ID), outbox.ErrNotDeadLetter, "resolved once")
			require.ErrorIs(t, r.Redrive(ctx, dl.ID), outbox.ErrNotDeadLetter, "resolved once")
		}
		time.Sleep(3 * time.Millisecond)
	}
	require.Len(t, handled, refused, "every refused event was set aside")
	writer.Wait()
	require.Eventually(t, outboxtest.Drained(db), 2*time.Minute, 10*time.Millisecond, "the outbox drained")
	cancel()
	wg.Wait()

	got := pub.snapshot()
	for k := range keys {
		var want []string
		for i := range perKey {
			if !skipped[id(k, i)] {
				want = append(want, id(k, i))
			}
		}
		var have []string
		for _, ev := range got {
			if ev.Key == fmt.Sprintf("key-%d", k) {
				have = append(have, ev.ID)
				assert.Equal(t, ev.ID, id(k, int(ev.Seq)-1))
			}
		}
		assert.Equal(t, want, have, "key-%d: published once each, in order, the skipped never", k)
	}
}
