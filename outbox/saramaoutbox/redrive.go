package saramaoutbox

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/IBM/sarama"

	"github.com/commercekit/commercekit/outbox"
)

// Redrive republishes the dead letters of dlqTopic to the topics they came from (header
// HeaderDeadTopic), as they were: same key, payload, event ID, type, sequence and headers,
// the dead-letter headers removed. Consumers deduplicate on the event ID, so a letter
// re-driven twice is applied once (while its processed record is kept: see
// outbox.WithProcessedRetention); one that fails again is dead-lettered again.
//
// It reads dlqTopic as consumer group group through client (made with ConsumerConfig, so
// a group's first run starts at the oldest letter), each partition up to the end it has
// when Redrive starts (letters arriving meanwhile wait for the next call), committing its
// progress: run it again to resume or to re-drive later letters. Run one Redrive per group
// at a time. A letter without HeaderDeadTopic or whose HeaderDeadTopic is no legal topic
// name, one with HeaderDeadAltered (DeadLetterQueue dropped part of it), and one the
// publisher refuses for good are skipped (and logged). Whoever can write to dlqTopic can
// have Redrive publish to any topic: let only the consumers' dead-letter producers write
// there. It returns how many
// letters it republished. dlqTopic must be written outside transactions, as a
// DeadLetterQueue does.
func Redrive(ctx context.Context, client sarama.Client, pub *Publisher, dlqTopic, group string, opts ...Option) (int, error) {
	o, err := newOptions(opts)
	if err != nil {
		return 0, err
	}
	fail := func(err error) error { return fmt.Errorf("saramaoutbox: redrive %s: %w", dlqTopic, err) }
	partitions, err := client.Partitions(dlqTopic)
	if err != nil {
		return 0, fail(err)
	}
	r := &redriver{pub: pub, o: o, client: client, topic: dlqTopic, ends: make(map[int32]int64), done: make(map[int32]bool)}
	for _, p := range partitions {
		if r.ends[p], err = client.GetOffset(dlqTopic, p, sarama.OffsetNewest); err != nil {
			return 0, fail(err)
		}
	}
	cg, err := sarama.NewConsumerGroupFromClient(group, client)
	if err != nil {
		return 0, fail(err)
	}
	defer cg.Close()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.cancel = cancel
	for !r.finished() {
		err := cg.Consume(runCtx, []string{dlqTopic}, r)
		if ctx.Err() != nil {
			return r.count(), ctx.Err()
		}
		if err := errors.Join(err, r.failure()); err != nil {
			return r.count(), fail(err)
		}
	}
	return r.count(), nil
}

// redriver is the consumer-group handler of Redrive.
type redriver struct {
	pub    *Publisher
	o      options
	client sarama.Client
	topic  string
	ends   map[int32]int64 // per partition, the end offset when Redrive started
	cancel context.CancelFunc

	mu   sync.Mutex
	done map[int32]bool
	n    int
	err  error
}

func (r *redriver) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (r *redriver) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (r *redriver) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	p, end := claim.Partition(), r.ends[claim.Partition()]
	next := claim.InitialOffset()
	if next < 0 {
		var err error
		if next, err = r.client.GetOffset(r.topic, p, sarama.OffsetOldest); err != nil {
			return r.stop(err)
		}
	}
	for next < end {
		select {
		case <-sess.Context().Done():
			return nil
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			ev := EventFromMessage(m)
			switch origin, altered := ev.Headers[HeaderDeadTopic], ev.Headers[HeaderDeadAltered]; {
			case altered != "":
				r.o.logger.Warn("saramaoutbox: redrive leaves a letter that is not the event sent: "+altered,
					"topic", r.topic, "partition", p, "offset", m.Offset, "id", ev.ID)
			case origin == "":
				r.o.logger.Warn("saramaoutbox: redrive skips a message without "+HeaderDeadTopic,
					"topic", r.topic, "partition", p, "offset", m.Offset)
			case !outbox.LegalTopic(origin):
				r.o.logger.Warn("saramaoutbox: redrive skips a letter whose "+HeaderDeadTopic+" is no topic name",
					"topic", r.topic, "partition", p, "offset", m.Offset, "origin", origin)
			default:
				ev.Topic = origin
				ev.Headers = withoutDeadLetterHeaders(ev.Headers)
				if err := r.pub.Publish(sess.Context(), []outbox.Event{ev}); err != nil {
					var refused *outbox.PublishError
					var never *outbox.PermanentError
					if !errors.As(err, &refused) || !errors.As(refused.Failed[ev.ID], &never) {
						return r.stop(err)
					}
					// Stopping at a letter the publisher can never take would stop every later
					// Redrive at it too.
					r.o.logger.Warn("saramaoutbox: redrive skips a letter the publisher can never take",
						"topic", r.topic, "partition", p, "offset", m.Offset, "id", ev.ID, "err", err)
					break
				}
				r.mu.Lock()
				r.n++
				r.mu.Unlock()
			}
			sess.MarkMessage(m, "")
			next = m.Offset + 1
		}
	}
	sess.Commit()
	r.mu.Lock()
	r.done[p] = true
	all := len(r.done) == len(r.ends)
	r.mu.Unlock()
	if all {
		r.cancel()
		return nil
	}
	// sarama ends the session for every claim once one ConsumeClaim returns: a partition
	// read to its end (an empty one at once) waits for the others, or the partitions
	// holding letters were cut off before their first message, session after session.
	<-sess.Context().Done()
	return nil
}

func (r *redriver) stop(err error) error {
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
	r.cancel()
	return err
}

func (r *redriver) finished() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.done) == len(r.ends) || r.err != nil
}

func (r *redriver) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *redriver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}
