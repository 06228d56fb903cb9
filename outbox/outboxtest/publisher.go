// Package outboxtest is the conformance suite of outbox.Publisher implementations: the
// promise a Relay builds on. A publisher's conformance_test.go runs it against the real
// destination:
//
//	func TestPublisherConformance(t *testing.T) {
//		outboxtest.RunPublisher(t, func(t *testing.T) (outbox.Publisher, string, outboxtest.Received) {
//			... a fresh publisher, a topic of its own and a reader of what reached the topic ...
//		})
//	}
//
// saramaoutbox.Publisher (Kafka) and outbox.Dispatcher (in-process consumers) pass it. A new
// publisher is done when it passes the suite.
package outboxtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/outbox"
)

// Received returns every copy of the events that reached the test's topic so far, each
// key's copies in the order a consumer of that key sees them, once at least n distinct
// events have arrived; it fails t when they do not arrive.
type Received func(t *testing.T, n int) []outbox.Event

// NewPublisher returns a fresh publisher for one test, a topic no other test uses, and the
// reader of what reached that topic.
type NewPublisher func(t *testing.T) (pub outbox.Publisher, topic string, received Received)

// RunPublisher runs the conformance suite against the publishers newPub makes. It checks
// that after Publish returns nil every event arrives intact (ID, type, key, sequence,
// payload, headers, creation time), each key's events first arrive in sequence order, and
// publishing a batch again, as a relay does after a failure, loses nothing and changes no
// event.
func RunPublisher(t *testing.T, newPub NewPublisher) {
	require.NotNil(t, newPub, "NewPublisher")
	ctx := context.Background()
	t.Run("EmptyBatch", func(t *testing.T) {
		pub, _, _ := newPub(t)
		require.NoError(t, pub.Publish(ctx, nil))
	})
	t.Run("EveryEventIntactInKeyOrder", func(t *testing.T) {
		pub, topic, received := newPub(t)
		want := Events(topic, 5, 4)
		// Two calls, as two relay rounds: each key's later events in the second.
		require.NoError(t, pub.Publish(ctx, want[:10]))
		require.NoError(t, pub.Publish(ctx, want[10:]))
		RequireArrived(t, received(t, len(want)), want)
	})
	t.Run("RepublishLosesNothing", func(t *testing.T) {
		pub, topic, received := newPub(t)
		want := Events(topic, 3, 3)
		require.NoError(t, pub.Publish(ctx, want))
		require.NoError(t, pub.Publish(ctx, want), "a relay publishes a batch again when it could not mark it sent")
		RequireArrived(t, received(t, len(want)), want)
	})
}

// Events returns perKey events on each of keys keys of topic, in the relay's order: by
// key, then by sequence 1, 2, 3, ...
func Events(topic string, keys, perKey int) []outbox.Event {
	created := time.Date(2026, 3, 1, 9, 0, 0, 123_456_000, time.UTC)
	var out []outbox.Event
	for k := range keys {
		for s := 1; s <= perKey; s++ {
			out = append(out, outbox.Event{
				ID: fmt.Sprintf("%s-k%d-%d", topic, k, s), Topic: topic, Key: fmt.Sprintf("key-%d", k),
				Type: "conformance.tested", Payload: []byte(fmt.Sprintf(`{"key":%d,"seq":%d}`, k, s)),
				Headers: map[string]string{"trace-id": fmt.Sprintf("t-%d-%d", k, s)}, CreatedAt: created, Seq: int64(s),
			})
		}
	}
	return out
}

// RequireArrived checks what a publisher delivered (got) against the events published
// (want): only those events, each intact and at least once, and per key the first copies in
// sequence order (a duplicate may come anywhere later: consumers skip it by ID). It returns
// how many duplicates arrived.
func RequireArrived(t testing.TB, got, want []outbox.Event) (duplicates int) {
	t.Helper()
	byID := make(map[string]outbox.Event, len(want))
	for _, ev := range want {
		byID[ev.ID] = ev
	}
	seen := make(map[string]bool)
	last := make(map[string]int64)
	for _, ev := range got {
		w, ok := byID[ev.ID]
		require.True(t, ok, "an event that was never published arrived: %+v", ev)
		assert.Equal(t, w.Topic, ev.Topic, "event %s", ev.ID)
		assert.Equal(t, w.Key, ev.Key, "event %s", ev.ID)
		assert.Equal(t, w.Type, ev.Type, "event %s", ev.ID)
		require.Equal(t, w.Seq, ev.Seq, "event %s", ev.ID)
		assert.JSONEq(t, string(w.Payload), string(ev.Payload), "event %s", ev.ID)
		assert.Equal(t, w.Headers, ev.Headers, "event %s", ev.ID)
		assert.True(t, w.CreatedAt.Equal(ev.CreatedAt), "event %s created %v, arrived with %v", ev.ID, w.CreatedAt, ev.CreatedAt)
		if seen[ev.ID] {
			duplicates++
			continue
		}
		seen[ev.ID] = true
		require.Equal(t, last[ev.Key]+1, ev.Seq, "key %s: first copy of seq %d after seq %d", ev.Key, ev.Seq, last[ev.Key])
		last[ev.Key] = ev.Seq
	}
	for _, ev := range want {
		require.True(t, seen[ev.ID], "event %s (key %s seq %d) never arrived", ev.ID, ev.Key, ev.Seq)
	}
	return duplicates
}
