package inventory

import "time"

// Op names an Inventory operation for an Observer.
type Op string

// The operations an Observer sees.
const (
	OpReserve  Op = "reserve"
	OpCommit   Op = "commit"
	OpRelease  Op = "release"
	OpReturn   Op = "return"
	OpGet      Op = "get"
	OpSweep    Op = "sweep"
	OpSetStock Op = "set_stock"
	OpAdjust   Op = "adjust"
	OpStocks   Op = "stocks"
)

// Observer is the metrics hook of an Inventory (implement it with Prometheus counters and
// histograms, for example). Methods are called synchronously and must be cheap and safe
// for concurrent use.
type Observer interface {
	// Observe is called after every operation with its duration and result (nil on success;
	// domain errors such as ErrInsufficientStock are results too).
	Observe(op Op, elapsed time.Duration, err error)
	// Expired is called after a sweep expired n > 0 reservations.
	Expired(n int)
}
