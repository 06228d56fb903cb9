package coupon

import "time"

// Op names an observed operation.
type Op string

// Observed operations.
const (
	OpIssue   Op = "issue"
	OpReserve Op = "reserve"
	OpConfirm Op = "confirm"
	OpRestore Op = "restore"
	OpSweep   Op = "sweep"
	OpRecount Op = "recount"
)

// Event is one observed operation.
type Event struct {
	Op         Op
	TemplateID string // for OpIssue and OpRecount
	// Err is the operation's error (nil on success); errcode.ReasonOf(Err) makes a metric label.
	Err     error
	Elapsed time.Duration
	// Count is how many reservations OpSweep restored.
	Count int
}

// Observer receives an Event after each operation. Implement it to export metrics (e.g. a
// Prometheus counter by Op and errcode.ReasonOf(Err) and a histogram of Elapsed); the
// package never registers metrics itself. Observe must be safe for concurrent use and
// should not block.
type Observer interface {
	Observe(Event)
}

type nopObserver struct{}

func (nopObserver) Observe(Event) {}

// observe reports an operation that started at start.
func (s *Service) observe(op Op, templateID string, start time.Time, err error) {
	s.observer.Observe(Event{Op: op, TemplateID: templateID, Err: err, Elapsed: time.Since(start)})
}
