package saramaoutbox

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/google/uuid"

	"github.com/commercekit/commercekit/outbox"
)

// MessageOverhead is the most the relay's message adds to an event's Size (outbox.Event.Size)
// as sarama counts it against Producer.MaxMessageBytes: the record framing and the four
// headers the relay writes (HeaderID, HeaderType, HeaderSeq, HeaderCreatedAt) at their
// largest, each with 10 bytes of length prefixes.
const MessageOverhead = recordOverhead +
	len(HeaderID) + outbox.MaxIDLen + 10 +
	len(HeaderType) + 4*outbox.MaxTypeLen + 10 + // up to 128 characters of up to 4 bytes
	len(HeaderSeq) + 20 + 10 + // an int64 in decimal
	len(HeaderCreatedAt) + len(time.RFC3339Nano) + 10

// recordOverhead is sarama's maximumRecordOverhead: the framing of one record.
const recordOverhead = 5*binary.MaxVarintLen32 + binary.MaxVarintLen64 + 1

// MaxEventBytes is the largest event Size (outbox.Event.Size) whose message fits cfg's
// Producer.MaxMessageBytes: give it to the writer, outbox.WithMaxEventBytes(MaxEventBytes(cfg)),
// so that Add refuses up front what the producer would refuse. The broker has its own
// limit on a record batch (message.max.bytes, or the topic's max.message.bytes): keep
// Producer.MaxMessageBytes below it. For ProducerConfig it is outbox.DefaultMaxEventBytes,
// the writer's default. An event the producer or the broker refuses anyway is set aside
// by the relay (outbox.Relay.DeadLetters).
func MaxEventBytes(cfg *sarama.Config) int { return cfg.Producer.MaxMessageBytes - MessageOverhead }

// ProducerConfig returns the sarama configuration NewPublisher uses when given none:
//
//   - an idempotent producer (Producer.Idempotent) whose writes are acknowledged by all
//     in-sync replicas (RequiredAcks = WaitForAll), with one request in flight per broker
//     (Net.MaxOpenRequests = 1), so retries neither duplicate nor reorder messages;
//   - transactional (Producer.Transaction.ID = "commercekit-outbox-" + a random UUID, a
//     30 s transaction timeout): the Publisher writes each relay batch in one Kafka
//     transaction, so a batch is visible to read_committed consumers entirely or not at
//     all (see the package documentation for why the idempotent producer alone does not
//     keep per-key order across a broker outage);
//   - short network timeouts, so a dead broker fails a round quickly and the relay backs off;
//   - Producer.MaxMessageBytes = outbox.DefaultMaxEventBytes + MessageOverhead (1,000,754),
//     so that the writer's default limit and the producer's agree (MaxEventBytes), under
//     a default broker's message.max.bytes (1,048,588) with room for the batch framing.
//
// Each call returns a new transactional ID. Give a relay instance a stable one (its pod
// name, say) to have its successor abort the transaction it left open at once, rather
// than after the transaction timeout.
func ProducerConfig() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.ClientID = "commercekit-outbox"
	cfg.Producer.Idempotent = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Transaction.ID = "commercekit-outbox-" + uuid.NewString()
	cfg.Producer.Transaction.Timeout = 30 * time.Second
	cfg.Producer.Transaction.Retry.Max = 10
	cfg.Producer.Transaction.Retry.Backoff = 100 * time.Millisecond
	cfg.Producer.MaxMessageBytes = outbox.DefaultMaxEventBytes + MessageOverhead
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	cfg.Producer.Retry.Max = 5
	cfg.Producer.Retry.Backoff = 100 * time.Millisecond
	cfg.Producer.Timeout = 10 * time.Second
	cfg.Net.DialTimeout = 5 * time.Second
	cfg.Net.ReadTimeout = 10 * time.Second
	cfg.Net.WriteTimeout = 10 * time.Second
	cfg.Metadata.Retry.Max = 2
	cfg.Metadata.Retry.Backoff = 100 * time.Millisecond
	return cfg
}

// CheckProducerConfig returns an error wrapping outbox.ErrInvalidConfig when cfg would
// break the relay's guarantees: it must describe an idempotent, transactional producer
// with RequiredAcks = WaitForAll, Net.MaxOpenRequests = 1, Return.Successes and
// Return.Errors on, and pass sarama's own validation.
func CheckProducerConfig(cfg *sarama.Config) error {
	bad := func(what string) error { return fmt.Errorf("%w: sarama config: %s", outbox.ErrInvalidConfig, what) }
	switch {
	case cfg == nil:
		return bad("missing")
	case !cfg.Producer.Idempotent:
		return bad("Producer.Idempotent must be true (retries must not duplicate or reorder)")
	case cfg.Producer.RequiredAcks != sarama.WaitForAll:
		return bad("Producer.RequiredAcks must be WaitForAll (an event is sent once all in-sync replicas have it)")
	case cfg.Net.MaxOpenRequests != 1:
		return bad("Net.MaxOpenRequests must be 1 (keeps per-partition order across retries)")
	case cfg.Producer.Transaction.ID == "":
		return bad("Producer.Transaction.ID must be set, unique per running Publisher (a batch is one transaction)")
	case !cfg.Producer.Return.Successes || !cfg.Producer.Return.Errors:
		return bad("Producer.Return.Successes and Producer.Return.Errors must be true")
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: sarama config: %w", outbox.ErrInvalidConfig, err)
	}
	return nil
}

// ConsumerConfig returns a sarama configuration for consumers of relayed topics (the
// consumer group of a ConsumerHandler, Redrive's client): read_committed, so messages of
// an aborted relay batch are never seen; a new group starts at the oldest offset, so no
// event published before it first joined is skipped; offsets the handler marks are
// committed every second.
func ConsumerConfig() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.ClientID = "commercekit-outbox-consumer"
	cfg.Consumer.IsolationLevel = sarama.ReadCommitted
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = true
	cfg.Consumer.Offsets.AutoCommit.Interval = time.Second
	cfg.Consumer.Return.Errors = true
	return cfg
}
