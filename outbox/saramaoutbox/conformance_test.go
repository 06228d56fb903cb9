package saramaoutbox_test

import (
	"testing"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
)

// TestPublisherConformance: the Kafka publisher keeps the outbox.Publisher promise.
func TestPublisherConformance(t *testing.T) {
	outboxtest.RunPublisher(t, func(t *testing.T) (outbox.Publisher, string, outboxtest.Received) {
		k := testenv.NewKafka(t)
		topic := k.Topic(t, "conformance")
		return newPublisher(t, k), topic, func(t *testing.T, n int) []outbox.Event {
			var got []outbox.Event
			for _, part := range readTopic(t, k, topic, n) {
				for _, m := range part {
					got = append(got, saramaoutbox.EventFromMessage(m))
				}
			}
			return got
		}
	})
}
