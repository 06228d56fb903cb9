package outbox

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/commercekit/commercekit/errcode"
)

// Sentinel errors for errors.Is.
var (
	// ErrInvalidEvent: an event failed validation (see EventError for which field and why).
	// Nothing was written. It matches errcode.ErrInvalidArgument.
	ErrInvalidEvent = errcode.Derive(errcode.ErrInvalidArgument, "outbox: invalid event")
	// ErrDuplicateEvent: an event with the caller-supplied ID is already in the outbox
	// (not yet deleted by the Cleaner: see Writer.Add). Nothing was written.
	ErrDuplicateEvent = errors.New("outbox: duplicate event ID")
	// ErrInvalidConfig: a constructor was given an argument or option it cannot work with.
	// It matches errcode.ErrInvalidArgument too, with the code Internal: a misconfigured
	// program, not a client's mistake.
	ErrInvalidConfig = errcode.New(errcode.Internal, "invalid_config", "outbox: invalid configuration", errcode.ErrInvalidArgument)
	// ErrPublish: a Publisher did not accept every event of a batch (see PublishError).
	ErrPublish = errors.New("outbox: publish failed")
	// ErrDeadLetter: a dead letter could not be stored; the batch it came from is left for a
	// later delivery.
	ErrDeadLetter = errors.New("outbox: dead letter failed")
	// ErrEventTooLarge: an event is larger than the writer's limit (WithMaxEventBytes),
	// so the publisher could never take it. Nothing was written. It wraps ErrInvalidEvent.
	ErrEventTooLarge = fmt.Errorf("%w: larger than the publisher accepts", ErrInvalidEvent)
	// ErrHandlerPanicked: a Consumer's handler panicked; the error carries the panic's
	// value (wrapped when it is an error) and the handler's stack. It is a handler failure
	// like any other: the batch is rolled back and the event retried, then dead-lettered
	// (unless the value is an error the Consumer does not count against the event, as if
	// returned: a lock wait timeout, the database failing).
	ErrHandlerPanicked = errors.New("outbox: consumer handler panicked")
	// ErrNotDeadLetter: Relay.Redrive or Relay.Skip was given the ID of an event that is not
	// set aside (unknown, or already redriven, skipped or published), or Consumer.Skip the ID
	// of an event that is neither a dead letter of the consumer nor one it applied. Nothing
	// changed.
	ErrNotDeadLetter = errors.New("outbox: not a dead letter")
	// ErrResolvedOtherwise: Relay.Redrive was given a dead letter already skipped, or
	// Relay.Skip one already redriven. Nothing changed.
	ErrResolvedOtherwise = errors.New("outbox: dead letter already resolved the other way")
	// ErrAlreadyApplied: Consumer.Skip was given an event the consumer has applied (a
	// dead letter redriven, or delivered again and applied while its letter stayed). It
	// matches ErrResolvedOtherwise. Nothing changed.
	ErrAlreadyApplied = fmt.Errorf("%w: the consumer applied the event", ErrResolvedOtherwise)
)

// EventError says which event of an Add call (or of a delivered batch) is invalid, which
// field and why. It wraps ErrInvalidEvent, ErrEventTooLarge or ErrDuplicateEvent.
type EventError struct {
	Index  int    // position of the event in the call, counting from 0
	ID     string // the event's ID, when it has one
	Field  string // "ID", "Topic", "Key", "Type", "Payload", "Headers"
	Reason string
	Err    error // ErrInvalidEvent, ErrEventTooLarge or ErrDuplicateEvent
}

func (e *EventError) Error() string {
	return fmt.Sprintf("%v: event %d (id %q): %s %s", e.Err, e.Index, e.ID, e.Field, e.Reason)
}

// Unwrap returns ErrInvalidEvent, ErrEventTooLarge or ErrDuplicateEvent.
func (e *EventError) Unwrap() error { return e.Err }

// PublishError is what a Publisher returns when only some events of a batch were accepted:
// Failed maps the ID of each event that was not accepted to its cause. Every event of the
// batch not in Failed was accepted durably. A cause wrapped with Permanent says the
// publisher can never take that event (too large for the broker, say); the relay then
// sets it aside as a dead letter (see Relay.DeadLetters). It wraps ErrPublish.
type PublishError struct {
	Failed map[string]error
}

func (e *PublishError) Error() string {
	ids := make([]string, 0, len(e.Failed))
	for id := range e.Failed {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %d event(s) not accepted", ErrPublish, len(ids))
	if len(ids) > 0 {
		fmt.Fprintf(&b, ", first %s: %v", ids[0], e.Failed[ids[0]])
	}
	return b.String()
}

// Unwrap returns ErrPublish.
func (e *PublishError) Unwrap() error { return ErrPublish }

// PermanentError marks an error that retrying cannot fix. From a consumer's handler (a
// payload that does not decode, say), the event goes to the consumer's dead letters at
// once instead of after MaxAttempts. As the cause of an event in a PublishError (the
// broker refuses the message for good), the relay sets the event aside in the outbox.
type PermanentError struct{ Err error }

// Permanent wraps err so that a Consumer dead-letters the event without retrying it, or,
// returned by a Publisher for one event, so that the relay sets that event aside.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *PermanentError) Unwrap() error { return e.Err }

func isPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

func invalidConfig(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
}
