package saramaoutbox

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/commercekit/commercekit/outbox"
)

// Kafka headers the relay writes on every message.
const (
	HeaderID        = "outbox-id"         // the event ID: consumers deduplicate on it
	HeaderType      = "outbox-type"       // the event type
	HeaderSeq       = "outbox-seq"        // the event's sequence number in its stream (decimal)
	HeaderCreatedAt = "outbox-created-at" // when the event was added (RFC 3339, UTC)
)

// Kafka headers a DeadLetterQueue adds to a dead letter.
const (
	HeaderDeadTopic    = "outbox-dlq-topic"    // the topic the event came from
	HeaderDeadConsumer = "outbox-dlq-consumer" // the consumer that gave up
	HeaderDeadError    = "outbox-dlq-error"    // its last error
	HeaderDeadAttempts = "outbox-dlq-attempts" // how many times it tried the event alone
	HeaderDeadAt       = "outbox-dlq-at"       // when it gave up (RFC 3339, UTC)
	HeaderDeadAltered  = "outbox-dlq-altered"  // what was dropped to fit the message, if anything
)

const deadPrefix = "outbox-dlq-"

// Message returns the Kafka message for ev: key = the aggregate key (so a stream stays on
// one partition, in order), value = the JSON payload, headers = event ID, type, sequence,
// creation time and the event's own headers (sorted by name).
func Message(ev outbox.Event) *sarama.ProducerMessage {
	headers := []sarama.RecordHeader{
		{Key: []byte(HeaderID), Value: []byte(ev.ID)},
		{Key: []byte(HeaderType), Value: []byte(ev.Type)},
		{Key: []byte(HeaderSeq), Value: []byte(strconv.FormatInt(ev.Seq, 10))},
		{Key: []byte(HeaderCreatedAt), Value: []byte(ev.CreatedAt.UTC().Format(time.RFC3339Nano))},
	}
	names := make([]string, 0, len(ev.Headers))
	for name := range ev.Headers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		headers = append(headers, sarama.RecordHeader{Key: []byte(name), Value: []byte(ev.Headers[name])})
	}
	return &sarama.ProducerMessage{
		Topic:    ev.Topic,
		Key:      sarama.StringEncoder(ev.Key),
		Value:    sarama.ByteEncoder(ev.Payload),
		Headers:  headers,
		Metadata: ev.ID,
	}
}

// EventFromMessage rebuilds the event a relay published as m. Headers other than the
// event's ID, type, sequence and creation time (including dead-letter headers) land in
// Headers. A message that did not come from a relay has an empty ID, which a Consumer
// dead-letters.
func EventFromMessage(m *sarama.ConsumerMessage) outbox.Event {
	ev := outbox.Event{Topic: m.Topic, Key: string(m.Key), Payload: m.Value, CreatedAt: m.Timestamp.UTC()}
	for _, h := range m.Headers {
		if h == nil {
			continue
		}
		name, value := string(h.Key), string(h.Value)
		switch name {
		case HeaderID:
			ev.ID = value
		case HeaderType:
			ev.Type = value
		case HeaderSeq:
			ev.Seq, _ = strconv.ParseInt(value, 10, 64)
		case HeaderCreatedAt:
			if t, err := time.Parse(time.RFC3339Nano, value); err == nil {
				ev.CreatedAt = t.UTC()
			}
		default:
			if ev.Headers == nil {
				ev.Headers = make(map[string]string)
			}
			ev.Headers[name] = value
		}
	}
	return ev
}

// withoutDeadLetterHeaders returns h without the dead-letter headers, nil when empty.
func withoutDeadLetterHeaders(h map[string]string) map[string]string {
	var out map[string]string
	for name, value := range h {
		if strings.HasPrefix(name, deadPrefix) {
			continue
		}
		if out == nil {
			out = make(map[string]string)
		}
		out[name] = value
	}
	return out
}
