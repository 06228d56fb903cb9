package outbox

import (
	"time"

	"github.com/commercekit/commercekit/observe"
)

// Observer is told the figures worth watching, the one shape every package shares (the
// library registers no metric itself). Its Events have Component "outbox" and Name
//
//   - "relay_lag": after each relay round, Elapsed the age of the oldest unsent event (0
//     when none is waiting).
//   - "published": N events of Labels["topic"] accepted by the publisher and marked sent.
//   - "publish_failed": N events of the topic the publisher did not accept (they stay
//     unsent and are tried again).
//   - "relay_dead_lettered": N events of the topic the relay set aside in the outbox
//     because the publisher can never take them (Relay.DeadLetters lists them;
//     Relay.Redrive or Relay.Skip resolves each). Later events of their streams wait.
//   - "applied", "duplicate", "handler_failed", "dead_lettered": N events of the topic that
//     the consumer Labels["consumer"] applied (committed), skipped because it had applied
//     them before (or they repeat an event of the same batch), failed to handle (each
//     attempt counts once), or gave up on and sent to its dead letters.
//   - "leased": N events of the topic whose delivery the consumer leased before handling
//     them (while its lease window is open: see Consumer.Deliver), the price of counting
//     the crashes a poison event causes.
//   - "suspected": one event of the topic found, at a delivery, to have earlier
//     deliveries that never ended (the process or the database died under its handling):
//     it is handled alone, or dead-lettered unhandled at 3. A poison event that kills its
//     consumer shows here before it is dead-lettered.
//   - "cleaned": N rows the Cleaner deleted from Labels["table"].
//
// It is called synchronously from the relay and consumer loops: keep it cheap.
type Observer = observe.Observer

// metrics turns what the relay, consumers and cleaner count into Events for the Observer.
type metrics struct{ o Observer }

// on reports whether anyone observes, so that figures costing a query are skipped when not.
func (m metrics) on() bool {
	_, nop := m.o.(observe.Nop)
	return !nop
}

func (m metrics) count(name string, n int, labels ...string) {
	e := observe.Event{Component: "outbox", Name: name, N: int64(n), Labels: make(map[string]string, len(labels)/2)}
	for i := 0; i+1 < len(labels); i += 2 {
		e.Labels[labels[i]] = labels[i+1]
	}
	m.o.Observe(e)
}

func (m metrics) RelayLag(age time.Duration) {
	m.o.Observe(observe.Event{Component: "outbox", Name: "relay_lag", Elapsed: age})
}
func (m metrics) Published(topic string, n int)     { m.count("published", n, "topic", topic) }
func (m metrics) PublishFailed(topic string, n int) { m.count("publish_failed", n, "topic", topic) }
func (m metrics) RelayDeadLettered(topic string, n int) {
	m.count("relay_dead_lettered", n, "topic", topic)
}
func (m metrics) Applied(consumer, topic string, n int) {
	m.count("applied", n, "consumer", consumer, "topic", topic)
}
func (m metrics) Duplicates(consumer, topic string, n int) {
	m.count("duplicate", n, "consumer", consumer, "topic", topic)
}
func (m metrics) HandlerFailed(consumer, topic string) {
	m.count("handler_failed", 1, "consumer", consumer, "topic", topic)
}
func (m metrics) DeadLettered(consumer, topic string, n int) {
	m.count("dead_lettered", n, "consumer", consumer, "topic", topic)
}
func (m metrics) Leased(consumer, topic string, n int) {
	m.count("leased", n, "consumer", consumer, "topic", topic)
}
func (m metrics) Suspected(consumer, topic string) {
	m.count("suspected", 1, "consumer", consumer, "topic", topic)
}
func (m metrics) Cleaned(table string, n int) { m.count("cleaned", n, "table", table) }
