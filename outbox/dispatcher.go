package outbox

import "context"

// Subscription routes the events of Topic to Consumer.
type Subscription struct {
	Topic    string
	Consumer *Consumer
}

// Dispatcher is the embedded mode: a Publisher that, instead of a broker, hands events to
// in-process consumers. Put it behind a Relay and one binary works without Kafka, with the
// same guarantees as through Kafka: events leave the outbox only after their transaction
// commits, arrive in stream order, and each Consumer applies each event once (its
// processed-events table absorbs the duplicates a relay crash causes), with retries and dead
// letters as Consumer.Deliver describes.
//
// Events of a topic nobody subscribes to are dropped (and marked sent). Publish returns
// the first error of a Consumer's Deliver (the database is down, a dead letter could not
// be stored, ctx is done); the relay then publishes the whole batch again later, and
// consumers that had applied it skip it.
type Dispatcher struct{ subs []Subscription }

// NewDispatcher returns a Dispatcher delivering to subs, in the order given.
func NewDispatcher(subs ...Subscription) (*Dispatcher, error) {
	type route struct{ topic, consumer string }
	seen := make(map[route]bool)
	for _, sub := range subs {
		if sub.Consumer == nil {
			return nil, invalidConfig("subscription to %q has no consumer", sub.Topic)
		}
		if reason := checkTopic(sub.Topic); reason != "" {
			return nil, invalidConfig("subscription topic %q %s", sub.Topic, reason)
		}
		r := route{sub.Topic, sub.Consumer.Name()}
		if seen[r] {
			return nil, invalidConfig("consumer %s subscribes to %s twice: its second handler would see only duplicates", r.consumer, r.topic)
		}
		seen[r] = true
	}
	return &Dispatcher{subs: subs}, nil
}

// Publish delivers each event to the consumers subscribed to its topic.
func (d *Dispatcher) Publish(ctx context.Context, events []Event) error {
	for _, sub := range d.subs {
		var mine []Event
		for _, ev := range events {
			if ev.Topic == sub.Topic {
				mine = append(mine, ev)
			}
		}
		if len(mine) == 0 {
			continue
		}
		if err := sub.Consumer.Deliver(ctx, mine); err != nil {
			return err
		}
	}
	return nil
}
