package saramaoutbox

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/commercekit/commercekit/outbox"
)

// DeadLetterQueue is an outbox.DeadLetterSink that produces dead letters to a Kafka topic:
// the original message (key, payload, event ID, type and sequence) with headers saying
// where it came from, which consumer gave up, its last error and how many attempts it
// made (HeaderDead*). Pass it to outbox.NewConsumer with outbox.WithDeadLetters.
//
// It produces outside transactions (an idempotent producer acknowledged by all in-sync
// replicas), so the dead-letter topic holds no transaction markers and Redrive can tell
// when it has read a partition to its end.
type DeadLetterQueue struct {
	producer sarama.SyncProducer
	topic    func(string) string
	maxBytes int // the producer's MaxMessageBytes
	inflight sync.WaitGroup
}

// DefaultDeadLetterTopic names the dead-letter topic of topic: topic + ".dlq".
func DefaultDeadLetterTopic(topic string) string { return topic + ".dlq" }

// DeadLetterConfig returns the producer configuration NewDeadLetterQueue uses when given
// none: ProducerConfig without the transaction.
func DeadLetterConfig() *sarama.Config {
	cfg := ProducerConfig()
	cfg.ClientID = "commercekit-outbox-dlq"
	cfg.Producer.Transaction.ID = ""
	return cfg
}

// NewDeadLetterQueue returns a DeadLetterQueue producing to brokers with cfg (nil:
// DeadLetterConfig()), to the topic that topic(original) names (nil:
// DefaultDeadLetterTopic). cfg must be idempotent with RequiredAcks = WaitForAll and not
// transactional.
func NewDeadLetterQueue(brokers []string, cfg *sarama.Config, topic func(original string) string) (*DeadLetterQueue, error) {
	if cfg == nil {
		cfg = DeadLetterConfig()
	}
	switch {
	case !cfg.Producer.Idempotent || cfg.Producer.RequiredAcks != sarama.WaitForAll || !cfg.Producer.Return.Successes:
		return nil, fmt.Errorf("%w: dead-letter producer must be idempotent, acknowledged by all in-sync replicas and return successes", outbox.ErrInvalidConfig)
	case cfg.Producer.Transaction.ID != "":
		return nil, fmt.Errorf("%w: dead-letter producer must not be transactional (Redrive reads the topic up to its end)", outbox.ErrInvalidConfig)
	}
	if topic == nil {
		topic = DefaultDeadLetterTopic
	}
	p, err := sarama.NewSyncProducer(brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("saramaoutbox: creating the dead-letter producer: %w", err)
	}
	return &DeadLetterQueue{producer: p, topic: topic, maxBytes: cfg.Producer.MaxMessageBytes}, nil
}

// DeadLetter produces dl to the dead-letter topic and returns once every in-sync replica
// has it, or ctx.Err() when ctx ends first. The error (HeaderDeadError) is cut to what
// the producer's MaxMessageBytes leaves room for: a large event with a long error (a
// handler's panic, with its stack) must not be refused, or its batch could never pass.
// When that is not enough (a message of another producer, as large as the broker takes),
// the event's own headers, then its payload, then its key are dropped, and HeaderDeadAltered says
// so; Redrive leaves such a letter alone. Like dl.Altered from a DeadLetterTable.
func (q *DeadLetterQueue) DeadLetter(ctx context.Context, dl outbox.DeadLetter) error {
	ev := dl.Event
	ev.Topic = q.topic(dl.Topic)
	ev.Headers = maps.Clone(ev.Headers)
	if ev.Headers == nil {
		ev.Headers = make(map[string]string)
	}
	ev.Headers[HeaderDeadTopic] = dl.Topic
	ev.Headers[HeaderDeadConsumer] = dl.Consumer
	ev.Headers[HeaderDeadError] = dl.Error
	ev.Headers[HeaderDeadAttempts] = strconv.Itoa(dl.Attempts)
	ev.Headers[HeaderDeadAt] = dl.At.UTC().Format(time.RFC3339Nano)
	msg := Message(ev)
	if over := msg.ByteSize(2) - q.maxBytes; over > 0 && over < len(dl.Error) {
		ev.Headers[HeaderDeadError] = strings.ToValidUTF8(dl.Error[:len(dl.Error)-over], "")
		msg = Message(ev)
	}
	// A message from another producer can be as large as the broker takes, larger than
	// the producer's limit leaves for it with the dead-letter headers: its own headers,
	// then its payload, then its key, are dropped, and the letter says so, or it would be refused at
	// every delivery, holding its partition.
	var altered []string
	for _, drop := range []func() string{
		func() string {
			n := 0
			for name, value := range ev.Headers {
				if !strings.HasPrefix(name, deadPrefix) {
					n += len(name) + len(value)
					delete(ev.Headers, name)
				}
			}
			return dropped("headers", n)
		},
		func() string {
			n := len(ev.Payload)
			ev.Payload = nil
			return dropped("payload", n)
		},
		func() string {
			n := len(ev.Key)
			ev.Key = ""
			return dropped("key", n)
		},
	} {
		if msg.ByteSize(2) <= q.maxBytes {
			break
		}
		if note := drop(); note != "" {
			altered = append(altered, note)
			ev.Headers[HeaderDeadAltered] = strings.Join(altered, "; ")
			msg = Message(ev)
		}
	}
	if over, text := msg.ByteSize(2)-q.maxBytes, ev.Headers[HeaderDeadError]; over > 0 && over < len(text) {
		ev.Headers[HeaderDeadError] = strings.ToValidUTF8(text[:len(text)-over], "") // an error as large as a message
		msg = Message(ev)
	}
	done := make(chan error, 1)
	q.inflight.Add(1)
	go func() {
		defer q.inflight.Done()
		_, _, err := q.producer.SendMessage(msg)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("saramaoutbox: producing dead letter %s to %s: %w", ev.ID, ev.Topic, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dropped says that n bytes of what were dropped, or nothing when n is 0.
func dropped(what string, n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%s of %d bytes dropped", what, n)
}

// Close waits for dead letters in flight and closes the producer.
func (q *DeadLetterQueue) Close() error {
	q.inflight.Wait()
	return q.producer.Close()
}
