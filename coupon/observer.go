package coupon

import (
	"time"

	"github.com/commercekit/commercekit/observe"
)

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

// Observer receives an Event after each operation, the one shape every package shares:
// Component "coupon", Name an Op, Elapsed, Err (nil on success; errcode.ReasonOf(Err) makes
// a metric label) and, for OpIssue and OpRecount, Labels {"template": the template's ID}. After a
// sweep that restored n > 0 reservations it also receives observe.Expired("coupon",
// "reservation", n). The package never registers metrics itself.
type Observer = observe.Observer

// observe reports an operation that started at start.
func (s *Service) observe(op Op, templateID string, start time.Time, err error) {
	e := observe.Timed("coupon", string(op), start, err)
	if templateID != "" {
		e.Labels = map[string]string{"template": templateID}
	}
	s.observer.Observe(e)
}
