package outbox

import "time"

// Metrics receives the figures worth watching. Implement it with Prometheus counters and
// gauges (the library registers nothing itself); embed NopMetrics to implement only some.
// Methods are called synchronously from the relay and consumer loops: keep them cheap.
type Metrics interface {
	// RelayLag reports, after each relay round, the age of the oldest unsent event (0 when
	// none is waiting).
	RelayLag(age time.Duration)
	// Published counts events of topic accepted by the publisher and marked sent.
	Published(topic string, n int)
	// PublishFailed counts events of topic the publisher did not accept (they stay unsent
	// and are tried again).
	PublishFailed(topic string, n int)
	// RelayDeadLettered counts events of topic the relay set aside in the outbox because
	// the publisher can never take them (Relay.DeadLetters lists them; Relay.Redrive or
	// Relay.Skip resolves each). Later events of their streams wait behind them.
	RelayDeadLettered(topic string, n int)
	// Applied counts events a consumer's handler applied (committed).
	Applied(consumer, topic string, n int)
	// Duplicates counts events a consumer skipped because it had applied them before (or
	// because they repeat an event of the same batch).
	Duplicates(consumer, topic string, n int)
	// HandlerFailed counts failed handler attempts (each retry counts once).
	HandlerFailed(consumer, topic string)
	// DeadLettered counts events a consumer gave up on and sent to its dead letters.
	DeadLettered(consumer, topic string, n int)
	// Cleaned counts rows the Cleaner deleted from table.
	Cleaned(table string, n int)
}

// NopMetrics is a Metrics that does nothing: the default, and a base to embed.
type NopMetrics struct{}

// RelayLag does nothing.
func (NopMetrics) RelayLag(time.Duration) {}

// Published does nothing.
func (NopMetrics) Published(string, int) {}

// PublishFailed does nothing.
func (NopMetrics) PublishFailed(string, int) {}

// RelayDeadLettered does nothing.
func (NopMetrics) RelayDeadLettered(string, int) {}

// Applied does nothing.
func (NopMetrics) Applied(string, string, int) {}

// Duplicates does nothing.
func (NopMetrics) Duplicates(string, string, int) {}

// HandlerFailed does nothing.
func (NopMetrics) HandlerFailed(string, string) {}

// DeadLettered does nothing.
func (NopMetrics) DeadLettered(string, string, int) {}

// Cleaned does nothing.
func (NopMetrics) Cleaned(string, int) {}
