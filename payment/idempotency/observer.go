package idempotency

import "github.com/commercekit/commercekit/observe"

// Event is an outcome the Store reports to its Observer.
type Event int

// The events, one per outcome.
const (
	// EventClaimed: a request claimed a free key and runs.
	EventClaimed Event = iota + 1
	// EventTakenOver: a request took over the key of a request whose lock expired (crashed).
	EventTakenOver
	// EventReplayed: a request got the stored response.
	EventReplayed
	// EventInProgress: a request was refused because the first one is still running.
	EventInProgress
	// EventKeyReused: a request was refused because the key is bound to another request.
	EventKeyReused
	// EventCompleted: a final response was stored.
	EventCompleted
	// EventReleased: a claim was given up without a response (transient failure).
	EventReleased
	// EventLockLost: a Complete or Release was refused by fencing.
	EventLockLost
	// EventDeferred: storing a response, releasing a claim or abandoning a claim whose
	// outcome is unknown failed because the backend was unavailable, and continues in the
	// background (see Do).
	EventDeferred
)

var eventNames = [...]string{"", "claimed", "taken_over", "replayed", "in_progress", "key_reused", "completed", "released", "lock_lost", "deferred"}

// String returns the event's name in snake case, usable as a metric label.
func (e Event) String() string {
	if e <= 0 || int(e) >= len(eventNames) {
		return "unknown"
	}
	return eventNames[e]
}

// Observer is told of every outcome, the one shape every package shares: an observe.Event
// with Component "idempotency" and Name the outcome's Event.String(), e.g. to count them in
// a Prometheus CounterVec labelled by Name. Observe must be safe for concurrent use and
// return quickly.
type Observer = observe.Observer

// report tells the observer of outcome e.
func (s *Store) report(e Event) {
	s.observer.Observe(observe.Event{Component: "idempotency", Name: e.String()})
}
