// Package saramaoutbox connects the outbox to Kafka with IBM/sarama: a Publisher for the
// relay, a consumer-group handler feeding an outbox.Consumer, a dead-letter queue and
// Redrive.
//
// # Producing
//
// Publisher produces each relay batch with an idempotent producer (Producer.Idempotent,
// RequiredAcks = WaitForAll, Net.MaxOpenRequests = 1; see ProducerConfig and
// CheckProducerConfig). The message key is the event's Key (the aggregate ID), so one
// aggregate's events land on one partition in order; the value is the JSON payload; the
// headers carry the event ID, type, sequence number and creation time (HeaderID,
// HeaderType, HeaderSeq, HeaderCreatedAt) and the event's own headers.
//
// Each batch is also one Kafka transaction, committed before the relay marks the batch
// sent and aborted on any failure. The idempotent producer alone does not keep per-key order
// across a broker outage: when sarama gives up on a message (say the leader cannot be
// found), it bumps the producer epoch and goes on sending the later messages of the same
// partition, which then succeed once the broker is back — seq n+1 on the topic before seq
// n, which the relay publishes again afterwards. Inside a transaction that batch is
// aborted as a whole and read_committed consumers never see it; the relay republishes it
// in order. The transactional ID must be unique per running Publisher (ProducerConfig
// draws a random one; a stable one per relay instance lets a restarted relay fence the
// transaction its predecessor left open at once instead of after the 30 s transaction
// timeout). Consumers must read with isolation level read_committed (ConsumerConfig).
//
// A relay crash between the transaction's commit and the database commit republishes the
// batch: a duplicate with the same event IDs, which consumers absorb.
//
// Known sarama defect (IBM/sarama#2913, unfixed in v1.61.1): its transaction manager reads
// a transaction's last error without the lock it is written under. When a transaction
// fails with messages for several partitions in flight (a broker outage), the race
// detector can report a data race inside sarama between a partition's failure and another
// partition's AddPartitionsToTxn. No use of the producer API avoids it without giving up
// pipelining (at most two messages in flight); the test reproducing it,
// TestBrokerStoppedWhileTransactionsInFlight, builds with -tags sarama2913.
//
// # Size limit and messages Kafka never takes
//
// ProducerConfig sets Producer.MaxMessageBytes to outbox.DefaultMaxEventBytes +
// MessageOverhead, so the outbox writer's default limit and the producer's agree; with
// another configuration, give the writer outbox.WithMaxEventBytes(MaxEventBytes(cfg)), and
// keep Producer.MaxMessageBytes below the broker's message.max.bytes (or the topic's
// max.message.bytes) less the record-batch header. An event that gets past the writer all
// the same (written under a larger limit, or a broker limit lowered later) does not stall
// the relay: the Publisher reports it as refused for good (outbox.Permanent: over
// MaxMessageBytes, checked before sending; or MESSAGE_TOO_LARGE and the like from the
// broker) and the relay sets it aside in the outbox table, where Relay.Redrive (after
// raising the limits) or Relay.Skip resolves it. The events after it on its key wait
// meanwhile; every other key flows on.
//
// # Consuming
//
// ConsumerHandler is a sarama.ConsumerGroupHandler: per claim it collects what has arrived
// (up to the consumer's batch size), rebuilds the events (EventFromMessage) and has the
// outbox.Consumer deliver them — deduplicated by event ID against outbox_processed in the
// same transaction as the handler's effects, retried, poison events dead-lettered — and
// marks the offsets only after that (sarama commits marked offsets every second). A
// delivery failing for a reason that is not the events' fault (database down) is retried in
// place with backoff and nothing is marked. Run loops over the group's sessions.
//
// DeadLetterQueue produces dead letters to "<topic>.dlq" (DefaultDeadLetterTopic) with
// the error, attempt count, consumer, original topic and time in headers (HeaderDead*),
// outside transactions. Redrive republishes them to their original topics with their
// original IDs, tracking its progress as a consumer group of its own.
//
// # Tests and measurements
//
// The tests run on MariaDB (Testcontainers) and the in-process kfake broker (stopped and
// restarted for the outage test), and cross-check the produced messages with kcat
// (librdkafka), which must be installed. Benchmarks: see the outbox package documentation.
package saramaoutbox
