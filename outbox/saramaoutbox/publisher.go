package saramaoutbox

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/IBM/sarama"

	"github.com/commercekit/commercekit/outbox"
)

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("saramaoutbox: publisher closed")

// Publisher is the outbox.Publisher that produces events to Kafka through a sarama
// idempotent, transactional producer (see ProducerConfig), one Kafka transaction per
// batch. Safe for concurrent use; batches are published one at a time.
type Publisher struct {
	newProducer func() (sarama.SyncProducer, error)
	maxBytes    int // the producer's Producer.MaxMessageBytes

	mu       sync.Mutex // one transaction at a time; guards producer and closed
	producer sarama.SyncProducer
	closed   bool
	inflight sync.WaitGroup // transactions a cancelled Publish stopped waiting for
}

// NewPublisher returns a Publisher for brokers with cfg (nil: ProducerConfig()). cfg is
// used as given and must pass CheckProducerConfig. The producer connects on first use, so
// a relay started while Kafka is down just backs off until it is up.
func NewPublisher(brokers []string, cfg *sarama.Config) (*Publisher, error) {
	if cfg == nil {
		cfg = ProducerConfig()
	}
	if err := CheckProducerConfig(cfg); err != nil {
		return nil, err
	}
	return &Publisher{
		newProducer: func() (sarama.SyncProducer, error) { return sarama.NewSyncProducer(brokers, cfg) },
		maxBytes:    cfg.Producer.MaxMessageBytes,
	}, nil
}

// NewPublisherFromClient produces through an existing client, whose configuration must
// pass CheckProducerConfig. Closing the Publisher leaves the client open.
func NewPublisherFromClient(client sarama.Client) (*Publisher, error) {
	if err := CheckProducerConfig(client.Config()); err != nil {
		return nil, err
	}
	return &Publisher{
		newProducer: func() (sarama.SyncProducer, error) { return sarama.NewSyncProducerFromClient(client) },
		maxBytes:    client.Config().Producer.MaxMessageBytes,
	}, nil
}

// Publish produces events (see Message) in one Kafka transaction and returns nil once it
// is committed, every message acknowledged by all in-sync replicas. Any failure aborts the
// transaction: none of its messages becomes visible to read_committed consumers, and the
// relay publishes them again later. After a failure the producer is rebuilt, which also
// fences a transaction the broker may still hold open. When ctx ends first, Publish
// returns ctx.Err() and the transaction completes or aborts in the background; the relay
// publishes the batch again, so a duplicate with the same event IDs is possible, never a
// gap. (outbox.Relay gives Publish 10 seconds past a shutdown, so this takes a broker
// slower than that.)
//
// A message the broker can never take is reported as such, so that the relay sets its
// event aside instead of retrying the batch forever: one larger than the producer's
// Producer.MaxMessageBytes is not sent at all, nor are the events after it in its stream
// (the others are); one the broker refuses with MESSAGE_TOO_LARGE,
// INVALID_TOPIC_EXCEPTION, RECORD_LIST_TOO_LARGE or INVALID_RECORD aborts the transaction.
// Publish then returns an *outbox.PublishError naming every message not committed, with
// an outbox.Permanent cause for those (the broker refuses a whole partition batch for one
// message, so the relay tries each alone before it sets one aside) and a plain one for
// the others. Any other failure fails the whole batch (an error wrapping
// outbox.ErrPublish, or a PublishError naming every message).
func (p *Publisher) Publish(ctx context.Context, events []outbox.Event) error {
	if len(events) == 0 {
		return nil
	}
	msgs := make([]*sarama.ProducerMessage, 0, len(events))
	tooLarge := make(map[string]error)      // refused, and the events after them in their stream
	behind := make(map[outbox.Stream]error) // streams cut by a refused event
	for _, ev := range events {
		if cause, cut := behind[ev.Stream()]; cut {
			tooLarge[ev.ID] = cause
			continue
		}
		msg := Message(ev)
		if size := msg.ByteSize(2); size > p.maxBytes {
			tooLarge[ev.ID] = outbox.Permanent(fmt.Errorf("%w: message of %d bytes, Producer.MaxMessageBytes is %d",
				sarama.ErrMessageSizeTooLarge, size, p.maxBytes))
			behind[ev.Stream()] = fmt.Errorf("saramaoutbox: not sent: event %s before it in its stream is too large", ev.ID)
			continue
		}
		msgs = append(msgs, msg)
	}
	done := make(chan error, 1)
	p.inflight.Add(1)
	go func() {
		defer p.inflight.Done()
		done <- p.publish(msgs)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if len(tooLarge) == 0 {
		return err
	}
	var pe *outbox.PublishError
	if !errors.As(err, &pe) {
		pe = &outbox.PublishError{Failed: make(map[string]error)}
		if err != nil { // the whole batch failed
			for _, msg := range msgs {
				pe.Failed[msg.Metadata.(string)] = err
			}
		}
	}
	for id, cause := range tooLarge {
		pe.Failed[id] = cause
	}
	return pe
}

func (p *Publisher) publish(msgs []*sarama.ProducerMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	fail := func(step string, err error) error {
		return fmt.Errorf("saramaoutbox: %w: %s: %w", outbox.ErrPublish, step, err)
	}
	if p.producer == nil {
		producer, err := p.newProducer()
		if err != nil {
			return fail("creating the producer", err)
		}
		p.producer = producer
	}
	if err := p.producer.BeginTxn(); err != nil {
		p.discard()
		return fail("beginning the transaction", err)
	}
	if err := p.producer.SendMessages(msgs); err != nil {
		p.abort()
		return producingFailed(msgs, err)
	}
	if err := p.producer.CommitTxn(); err != nil {
		p.abort()
		return fail("committing the transaction", err)
	}
	return nil
}

// producingFailed is the error of a transaction aborted because messages failed: a
// *outbox.PublishError naming every message (the abort took them all), with
// outbox.Permanent causes for those the broker refused for good.
func producingFailed(msgs []*sarama.ProducerMessage, err error) error {
	var perrs sarama.ProducerErrors
	if !errors.As(err, &perrs) || len(perrs) == 0 {
		return fmt.Errorf("saramaoutbox: %w: producing: %w", outbox.ErrPublish, err)
	}
	aborted := fmt.Errorf("saramaoutbox: transaction aborted: %d of %d messages failed, first: %w", len(perrs), len(msgs), perrs[0].Err)
	failed := make(map[string]error, len(msgs))
	for _, msg := range msgs {
		failed[msg.Metadata.(string)] = aborted
	}
	for _, pe := range perrs {
		if refusedForGood(pe.Err) {
			failed[pe.Msg.Metadata.(string)] = outbox.Permanent(fmt.Errorf("saramaoutbox: the broker refused the message: %w", pe.Err))
		}
	}
	return &outbox.PublishError{Failed: failed}
}

// refusedForGood reports whether the broker refused a message for a reason that retrying
// the same message cannot fix.
func refusedForGood(err error) bool {
	for _, kerr := range []sarama.KError{sarama.ErrMessageSizeTooLarge, sarama.ErrInvalidTopic, sarama.ErrMessageSetSizeTooLarge, sarama.ErrInvalidRecord} {
		if errors.Is(err, kerr) {
			return true
		}
	}
	return false
}

// abort aborts the current transaction and, whatever the outcome, rebuilds the producer
// on next use: a fresh one (same transactional ID) fences any transaction the broker may
// still hold open and clears sarama's error state.
func (p *Publisher) abort() {
	_ = p.producer.AbortTxn()
	p.discard()
}

func (p *Publisher) discard() {
	_ = p.producer.Close()
	p.producer = nil
}

// Close waits for transactions in flight and closes the producer. Publish fails with
// ErrClosed afterwards.
func (p *Publisher) Close() error {
	p.inflight.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.producer == nil {
		return nil
	}
	err := p.producer.Close()
	p.producer = nil
	return err
}
