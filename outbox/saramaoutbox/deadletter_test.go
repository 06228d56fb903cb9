package saramaoutbox_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

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

// TestDeadLetterOfAForeignMessageLargerThanTheProducerTakes: another producer's message
// can be as large as the broker takes (message.max.bytes, 1,048,588 by default), larger
// than DeadLetterConfig's MaxMessageBytes leaves room for with the dead-letter headers. Its
// letter was refused at every delivery, holding the partition for ever. Now its headers,
// then its payload, are dropped, HeaderDeadAltered says so, and Redrive leaves it alone.
// (Found by a session attacking the consumer's handling of hostile events.)
func TestDeadLetterOfAForeignMessageLargerThanTheProducerTakes(t *testing.T) {
	ctx := context.Background()
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	cfg := sarama.NewConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.MaxMessageBytes = 1_048_000
	foreign, err := sarama.NewSyncProducer(k.Brokers, cfg)
	require.NoError(t, err)
	big := strings.Repeat("x", 1_040_000)
	for _, m := range []*sarama.ProducerMessage{
		{Topic: topic, Key: sarama.StringEncoder("k"), Value: sarama.StringEncoder(big)},
		{Topic: topic, Key: sarama.StringEncoder("k"), Value: sarama.StringEncoder(`{}`),
			Headers: []sarama.RecordHeader{{Key: []byte("trace"), Value: []byte(big)}}},
	} {
		_, _, err = foreign.SendMessage(m)
		require.NoError(t, err, "the broker takes the foreign message")
	}
	require.NoError(t, foreign.Close())
	var events []outbox.Event
	for _, p := range readTopic(t, k, topic, 1) {
		for _, m := range p {
			events = append(events, saramaoutbox.EventFromMessage(m))
		}
	}
	require.Len(t, events, 2, "both without an ID: one distinct ID for readTopic")

	dlq, err := saramaoutbox.NewDeadLetterQueue(k.Brokers, nil, nil)
	require.NoError(t, err)
	defer dlq.Close()
	c, err := outbox.NewConsumer(openDB(t), "projector", func(context.Context, bun.Tx, []outbox.Event) error { return nil },
		outbox.WithDeadLetters(dlq))
	require.NoError(t, err)
	require.NoError(t, c.Deliver(ctx, events), "a foreign message costs a dead letter, never the stream")

	dlqTopic := saramaoutbox.DefaultDeadLetterTopic(topic)
	var letters []outbox.Event
	for _, p := range readTopic(t, k, dlqTopic, 1) {
		for _, m := range p {
			letters = append(letters, saramaoutbox.EventFromMessage(m))
		}
	}
	require.Len(t, letters, 2)
	assert.Equal(t, "payload of 1040000 bytes dropped", letters[0].Headers[saramaoutbox.HeaderDeadAltered])
	assert.Empty(t, letters[0].Payload)
	assert.Equal(t, "headers of 1040005 bytes dropped", letters[1].Headers[saramaoutbox.HeaderDeadAltered])
	assert.Equal(t, `{}`, string(letters[1].Payload), "the payload fits once the headers are dropped")
	assert.Empty(t, letters[1].Headers["trace"])
	for _, dl := range letters {
		assert.Contains(t, dl.Headers[saramaoutbox.HeaderDeadError], "ID is missing")
	}
	// A sink's caller other than a Consumer (which cuts errors to 32 KiB) may pass an
	// error as large as a message: it is cut once the event is.
	require.NoError(t, dlq.DeadLetter(ctx, outbox.DeadLetter{Event: events[0], Consumer: "projector",
		Error: strings.Repeat("e", 2<<20), At: time.Now()}))

	n, err := saramaoutbox.Redrive(ctx, newClient(t, k), newPublisher(t, k), dlqTopic, "projector-redrive")
	require.NoError(t, err)
	assert.Zero(t, n, "a letter that is not the event sent is left alone")
}

// TestRedriveOfOneLetterAmongEmptyPartitions: sarama ends a group session for every claim
// once one ConsumeClaim returns, and Redrive's returned at once for a partition without
// letters: the partition holding the one letter was cut off before its first message,
// session after session, and Redrive never ended (found by a helper whose Redrive tests
// all failed with "context canceled"; the dead-letter topic has 4 partitions here).
func TestRedriveOfOneLetterAmongEmptyPartitions(t *testing.T) {
	ctx := context.Background()
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	dlqTopic := saramaoutbox.DefaultDeadLetterTopic(topic)
	dlq, err := saramaoutbox.NewDeadLetterQueue(k.Brokers, nil, nil)
	require.NoError(t, err)
	defer dlq.Close()
	require.NoError(t, dlq.DeadLetter(ctx, outbox.DeadLetter{Event: outbox.Event{ID: "good", Topic: topic, Key: "k", Type: "x",
		Seq: 1, CreatedAt: time.Now(), Payload: []byte(`{}`)}, Consumer: "projector", Error: "e", At: time.Now()}))
	n, err := saramaoutbox.Redrive(ctx, newClient(t, k), newPublisher(t, k), dlqTopic, "redrive")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, []string{"good"}, eventIDs(t, k, topic))
}

// TestRedriveSkipsLettersItCanNeverPublish: a letter naming no legal topic (anyone who can
// write to the dead-letter topic can write one), or one the publisher refuses for good
// (too large for it), stopped Redrive at it, and every later Redrive at it again, never
// reaching the letters behind it. They are skipped, and the letter behind them is
// republished.
func TestRedriveSkipsLettersItCanNeverPublish(t *testing.T) {
	ctx := context.Background()
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	dlqTopic := saramaoutbox.DefaultDeadLetterTopic(topic)
	dlq, err := saramaoutbox.NewDeadLetterQueue(k.Brokers, nil, func(string) string { return dlqTopic })
	require.NoError(t, err)
	defer dlq.Close()
	letter := func(id, origin string, payload int) outbox.DeadLetter {
		return outbox.DeadLetter{Event: outbox.Event{ID: id, Topic: origin, Key: "k", Type: "x", Seq: 1, CreatedAt: time.Now(),
			Payload: []byte(`"` + strings.Repeat("p", payload) + `"`)}, Consumer: "projector", Error: "e", At: time.Now()}
	}
	for _, dl := range []outbox.DeadLetter{letter("bad-topic", "no such topic!", 1), letter("too-large", topic, 20_000), letter("good", topic, 1)} {
		require.NoError(t, dlq.DeadLetter(ctx, dl), "one key: one partition, in this order")
	}
	cfg := saramaoutbox.ProducerConfig()
	cfg.Producer.MaxMessageBytes = 10_000
	pub, err := saramaoutbox.NewPublisher(k.Brokers, cfg)
	require.NoError(t, err)
	defer pub.Close()
	n, err := saramaoutbox.Redrive(ctx, newClient(t, k), pub, dlqTopic, "redrive")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, []string{"good"}, eventIDs(t, k, topic))
}

// eventIDs returns the IDs of the events on topic, partition by partition.
func eventIDs(t *testing.T, k *testenv.Kafka, topic string) []string {
	t.Helper()
	var ids []string
	for _, p := range readTopic(t, k, topic, 1) {
		for _, m := range p {
			ids = append(ids, saramaoutbox.EventFromMessage(m).ID)
		}
	}
	return ids
}
