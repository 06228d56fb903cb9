package saramaoutbox

import (
	"context"
	"errors"

	"github.com/IBM/sarama"

	"github.com/commercekit/commercekit/internal/backoff"
	"github.com/commercekit/commercekit/outbox"
)

// ConsumerHandler is a sarama.ConsumerGroupHandler that feeds an outbox.Consumer: it
// collects the messages of a claim into batches (what has arrived, up to the consumer's
// batch size, without waiting for more), turns them back into events (EventFromMessage)
// and has the Consumer deliver them: deduplicated by event ID in the same transaction as
// the handler's effects, retried, poison events dead-lettered. Only after Deliver returns
// nil (every event applied, found applied, or dead-lettered durably) does it mark the
// batch's offsets, which sarama then commits; a crash before that redelivers the batch and
// the dedup absorbs it. A delivery failing for another reason (database down) is retried
// with backoff for as long as the claim lasts.
type ConsumerHandler struct {
	consumer *outbox.Consumer
	o        options
}

// NewConsumerHandler returns a handler delivering to c. Options: WithLogger, WithBackoff.
func NewConsumerHandler(c *outbox.Consumer, opts ...Option) (*ConsumerHandler, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	return &ConsumerHandler{consumer: c, o: o}, nil
}

// Setup does nothing.
func (h *ConsumerHandler) Setup(sarama.ConsumerGroupSession) error { return nil }

// Cleanup does nothing.
func (h *ConsumerHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim consumes one partition until the claim ends. Its first deliveries are leased
// (outbox.Consumer.LeaseAgain): they may be what a member that died was handling.
func (h *ConsumerHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	h.consumer.LeaseAgain()
	ctx := sess.Context()
	size := h.consumer.BatchSize()
	for {
		var batch []*sarama.ConsumerMessage
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			batch = append(batch, m)
		}
	fill:
		for len(batch) < size {
			select {
			case m, ok := <-claim.Messages():
				if !ok {
					break fill
				}
				batch = append(batch, m)
			default:
				break fill
			}
		}
		events := make([]outbox.Event, len(batch))
		for i, m := range batch {
			events[i] = EventFromMessage(m)
		}
		if err := h.deliver(ctx, events); err != nil {
			return nil // the session is over; the batch is redelivered to whoever gets the partition
		}
		sess.MarkMessage(batch[len(batch)-1], "")
	}
}

// deliver delivers events, retrying failures that are not the events' fault until ctx ends.
func (h *ConsumerHandler) deliver(ctx context.Context, events []outbox.Event) error {
	for attempt := 1; ; attempt++ {
		err := h.consumer.Deliver(ctx, events)
		if err == nil || ctx.Err() != nil {
			return ctxOr(ctx, err)
		}
		pause := backoff.Equal(attempt, h.o.minBackoff, h.o.maxBackoff)
		h.o.logger.Warn("saramaoutbox: delivery failed, retrying", "consumer", h.consumer.Name(),
			"topic", events[0].Topic, "events", len(events), "attempt", attempt, "pause", pause, "err", err)
		if err := backoff.Sleep(ctx, pause); err != nil {
			return err
		}
	}
}

// Run consumes topics with group until ctx is done (then returns nil) or the group is
// closed. It rejoins after every rebalance and backs off after errors.
func (h *ConsumerHandler) Run(ctx context.Context, group sarama.ConsumerGroup, topics ...string) error {
	for attempt := 1; ; {
		err := group.Consume(ctx, topics, h)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, sarama.ErrClosedConsumerGroup):
			return err
		case err != nil:
			h.o.logger.Warn("saramaoutbox: consumer group session failed", "consumer", h.consumer.Name(), "err", err)
			if backoff.Sleep(ctx, backoff.Equal(attempt, h.o.minBackoff, h.o.maxBackoff)) != nil {
				return nil
			}
			attempt++
		default:
			attempt = 1
		}
	}
}

func ctxOr(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && err != nil {
		return ctxErr
	}
	return err
}
