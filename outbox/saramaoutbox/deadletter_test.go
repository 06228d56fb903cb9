package saramaoutbox_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
)

// TestDeadLetterOfTheLargestEvent: the largest event the writer takes for the relay's
// producer (MaxEventBytes of ProducerConfig) can be dead-lettered to the dead-letter
// topic with DeadLetterConfig, with a short error or a panic's (its value and stack, up
// to some KiB): a dead letter the producer refuses fails Deliver at every delivery of its
// batch, holding up every event after it for ever.
func TestDeadLetterOfTheLargestEvent(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	dlq, err := saramaoutbox.NewDeadLetterQueue(k.Brokers, nil, nil)
	require.NoError(t, err)
	defer dlq.Close()
	ev := outbox.Event{ID: "01a23000-0000-7000-8000-000000000001", Topic: topic, Key: "key-1", Type: "order.placed",
		Seq: 1, CreatedAt: time.Now().UTC(), Headers: map[string]string{"trace": "t-1"}}
	ev.Payload = []byte(strings.Repeat("x", saramaoutbox.MaxEventBytes(saramaoutbox.ProducerConfig())-ev.Size()))
	require.Equal(t, saramaoutbox.MaxEventBytes(saramaoutbox.ProducerConfig()), ev.Size())
	causes := []string{"cannot apply: product 42 unknown",
		"outbox: consumer handler panicked: " + strings.Repeat("goroutine 1 [running]:\n", 700)}
	for _, cause := range causes {
		err := dlq.DeadLetter(context.Background(), outbox.DeadLetter{Event: ev, Consumer: "projector",
			Error: cause, Attempts: 3, At: time.Now()})
		require.NoError(t, err, "dead letter with a %d-byte error", len(cause))
	}
	var letters []outbox.Event
	for _, p := range readTopic(t, k, saramaoutbox.DefaultDeadLetterTopic(topic), 1) {
		for _, m := range p {
			letters = append(letters, saramaoutbox.EventFromMessage(m))
		}
	}
	require.Len(t, letters, len(causes))
	for i, dl := range letters {
		assert.Equal(t, string(ev.Payload), string(dl.Payload), "the event whole")
		assert.Equal(t, "t-1", dl.Headers["trace"])
		assert.Equal(t, "3", dl.Headers[saramaoutbox.HeaderDeadAttempts])
		got := dl.Headers[saramaoutbox.HeaderDeadError]
		assert.GreaterOrEqual(t, len(got), min(len(causes[i]), 100), "the error's start")
		assert.True(t, strings.HasPrefix(causes[i], got), "the error's start: %.80q", got)
	}
}
