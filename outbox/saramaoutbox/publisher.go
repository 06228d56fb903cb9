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
	return &Publisher{newProducer: func() (sarama.SyncProducer, error) { return sarama.NewSyncProducer(brokers, cfg) }}, nil
}

// NewPublisherFromClient produces through an existing client, whose configuration must
// pass CheckProducerConfig. Closing the Publisher leaves the client open.
func NewPublisherFromClient(client sarama.Client) (*Publisher, error) {
	if err := CheckProducerConfig(client.Config()); err != nil {
		return nil, err
	}
	return &Publisher{newProducer: func() (sarama.SyncProducer, error) { return sarama.NewSyncProducerFromClient(client) }}, nil
}

// Publish produces events (see Message) in one Kafka transaction and returns nil once it
// is committed, every message acknowledged by all in-sync replicas. Any failure aborts the
// transaction and fails the whole batch (an error wrapping outbox.ErrPublish): none of its
// messages becomes visible to read_committed consumers, and the relay publishes the batch
// again later. After a failure the producer is rebuilt, which also fences a transaction the
// broker may still hold open. When ctx ends first, Publish returns ctx.Err() and the
// transaction completes or aborts in the background; the relay publishes the batch again,
// so a duplicate with the same event IDs is possible, never a gap.
func (p *Publisher) Publish(ctx context.Context, events []outbox.Event) error {
	if len(events) == 0 {
		return nil
	}
	msgs := make([]*sarama.ProducerMessage, len(events))
	for i, ev := range events {
		msgs[i] = Message(ev)
	}
	done := make(chan error, 1)
	p.inflight.Add(1)
	go func() {
		defer p.inflight.Done()
		done <- p.publish(msgs)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Publisher) publish(msgs []*sarama.ProducerMessage) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	fail := func(step string, err error) error {
		var perrs sarama.ProducerErrors
		if errors.As(err, &perrs) && len(perrs) > 0 {
			err = fmt.Errorf("%d of %d messages failed, first: %w", len(perrs), len(msgs), perrs[0].Err)
		}
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
		return fail("producing", err)
	}
	if err := p.producer.CommitTxn(); err != nil {
		p.abort()
		return fail("committing the transaction", err)
	}
	return nil
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
