// Package observe is the one shape of commercekit's metrics hooks. Every package that
// reports what it does takes an Observer (its WithObserver option) and tells it an Event
// after each operation or happening, so one Observer — Prometheus counters labelled by the
// Event's fields, say — serves them all:
//
//	obs := observe.Func(func(e observe.Event) {
//		ops.WithLabelValues(e.Component, e.Name, result(e.Err)).Inc()
//	})
//	inv, err := inventory.New(backend, inventory.WithObserver(obs))
//	l, err := ledger.New(db, ledger.WithObserver(obs))
//
// Observers are called synchronously, after the change is committed, from whatever
// goroutine made it: they must be quick, safe for concurrent use, and must not call back
// into the package that called them.
package observe

import "time"

// Event is one operation or happening a package reports.
type Event struct {
	// Component is the reporting package: "inventory", "ledger", "coupon", "payment",
	// "breaker", "idempotency", "outbox" or "commerce".
	Component string
	// Name is what happened: an operation ("reserve", "hold"), or an occurrence the
	// package's doc lists ("expired", "transition", "published", ...).
	Name string
	// Elapsed is how long an operation took (or, for "relay_lag", the age of the oldest
	// unsent event); zero for what is not timed.
	Elapsed time.Duration
	// Err is the operation's error, nil on success. Domain errors (insufficient stock, a
	// declined card) are results too.
	Err error
	// N is how many things the event concerns (reservations expired, events published) or
	// how much (an order's amount); zero when it counts nothing.
	N int64
	// Labels are what else the event is about, by a fixed set of keys the package's doc
	// lists (a topic, a payment's new state, a breaker's previous state); nil when none.
	Labels map[string]string
}

// Observer receives Events.
type Observer interface {
	Observe(Event)
}

// Func adapts a function to Observer.
type Func func(Event)

// Observe calls f(e).
func (f Func) Observe(e Event) { f(e) }

// Nop is an Observer that does nothing: every package's default.
type Nop struct{}

// Observe does nothing.
func (Nop) Observe(Event) {}

// Timed returns the Event of an operation named name of component that started at start
// and ended with err.
func Timed(component, name string, start time.Time, err error) Event {
	return Event{Component: component, Name: name, Elapsed: time.Since(start), Err: err}
}

// Expired returns the Event of n things of kind (a "reservation", a "hold", a "lot")
// that component resolved by their deadline: Name "expired", N n, Labels {"kind": kind}.
func Expired(component, kind string, n int) Event {
	return Event{Component: component, Name: "expired", N: int64(n), Labels: map[string]string{"kind": kind}}
}
