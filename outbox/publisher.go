package outbox

import "context"

// Publisher hands a batch of events on: to Kafka (saramaoutbox.Publisher) or to in-process
// consumers (Dispatcher). The Relay calls it with events in stream order: within a stream,
// by increasing Seq.
//
// Publish returns nil when every event was accepted durably. When only some were, it
// returns a *PublishError naming the others; any other error means none counts as
// accepted. An event reported as not accepted may still have arrived (a timeout after the
// broker wrote it): the relay publishes it again, so consumers see a duplicate with the
// same event ID, never a gap.
type Publisher interface {
	Publish(ctx context.Context, events []Event) error
}

// PublisherFunc adapts a function to Publisher.
type PublisherFunc func(ctx context.Context, events []Event) error

// Publish calls f.
func (f PublisherFunc) Publish(ctx context.Context, events []Event) error { return f(ctx, events) }
