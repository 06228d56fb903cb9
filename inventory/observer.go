package inventory

import "github.com/commercekit/commercekit/observe"

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

// Observer is the metrics hook of an Inventory, the one shape every package shares. It is
// told, with Component "inventory", an Event after every operation (Name an Op, Elapsed,
// Err: nil on success; domain errors such as ErrInsufficientStock are results too), and
// observe.Expired("inventory", "reservation", n) after a sweep expired n > 0 reservations.
type Observer = observe.Observer
