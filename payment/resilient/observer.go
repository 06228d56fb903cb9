package resilient

import (
	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/commercekit/commercekit/observe"
)

// BreakerState is the state of a Gateway's circuit breaker.
type BreakerState int

// The breaker's states.
const (
	// BreakerClosed: calls go through.
	BreakerClosed BreakerState = iota
	// BreakerOpen: calls fail at once with ErrGatewayUnavailable.
	BreakerOpen
	// BreakerHalfOpen: a few trial calls go through; their outcome closes or reopens it.
	BreakerHalfOpen
)

// String names the state: "closed", "open" or "half-open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return "unknown"
}

func stateOf(s circuitbreaker.State) BreakerState {
	switch s {
	case circuitbreaker.OpenState:
		return BreakerOpen
	case circuitbreaker.HalfOpenState:
		return BreakerHalfOpen
	}
	return BreakerClosed
}

// Observer is told of a Gateway's breaker changing state, e.g. to export it as a gauge: the
// one shape every package shares, here an Event with Component "breaker", Name
// "state_changed", N the new BreakerState's number and Labels {"from", "to"}: the old and
// new states' names. It is called synchronously from the call that caused the change;
// keep it fast.
type Observer = observe.Observer

// stateChanged is the Event of the breaker moving from one state to another.
func stateChanged(from, to BreakerState) observe.Event {
	return observe.Event{Component: "breaker", Name: "state_changed", N: int64(to),
		Labels: map[string]string{"from": from.String(), "to": to.String()}}
}
