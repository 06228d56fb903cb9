package inventory

import "time"

// Limits the domain layer enforces on every request, whatever the backend.
const (
	// MaxLines is the most lines one reservation may have (before lines of one SKU are summed).
	MaxLines = 50
	// MaxQtyPerSKU is the most units of one SKU one reservation may hold (after summing).
	MaxQtyPerSKU = 999
	// MaxIDLen is the longest reservation, adjustment, buyer ID or SKU, in bytes.
	MaxIDLen = 64
	// MaxReasonLen is the longest adjustment reason, in bytes.
	MaxReasonLen = 255
	// MaxOnHand bounds on-hand counts and adjustment deltas, so every count stays exact in
	// every backend (Redis Lua numbers are doubles, exact only to 2^53): SetStock refuses
	// an on-hand count past it, and Adjust a delta past it or one that would take the
	// on-hand count past it. A Return may take the on-hand count past it (its units were
	// on hand before they were sold, and a cancellation must complete): by the units
	// returned, or by more through billions of sales, restocks and returns at the limit.
	MaxOnHand = 1_000_000_000_000
	// MaxStocksPerCall is the most SKUs one Stocks call may read.
	MaxStocksPerCall = 1000
)

// Line is one line of a reservation: Qty units of SKU.
type Line struct {
	SKU string
	Qty int64
}

// ReserveRequest asks for all of its lines or none.
type ReserveRequest struct {
	// ID is the caller's idempotency key for the reservation (1-64 printable ASCII bytes):
	// the same request again returns the original reservation.
	ID string
	// Lines are what to reserve; lines of one SKU are summed. 1 to MaxLines lines.
	Lines []Line
	// TTL is how long the units stay reserved without a Commit; zero means the
	// Inventory's default (WithDefaultTTL).
	TTL time.Duration
	// BuyerID, when set, counts the units against the per-buyer limit of each SKU.
	// Reserving a SKU that has a buyer limit requires it.
	BuyerID string
}

// State is where a reservation is in its life: reserved, then exactly one of committed,
// released or expired; a committed reservation may later be returned.
type State string

// The states of a reservation.
const (
	StateReserved  State = "reserved"
	StateCommitted State = "committed"
	StateReleased  State = "released"
	StateExpired   State = "expired"
	// StateReturned: the units of a committed reservation came back (Return); they are on
	// sale again and no longer count as sold nor against the buyer's limit.
	StateReturned State = "returned"
)

// Dead reports whether a reservation in state st holds nothing and can never hold again
// (released, expired or returned): a Reserve replaying its ID fails.
func (st State) Dead() bool {
	return st == StateReleased || st == StateExpired || st == StateReturned
}

// Reservation is a hold on stock.
type Reservation struct {
	ID string
	// Lines are sorted by SKU, one line per SKU.
	Lines   []Line
	BuyerID string
	State   State
	// CreatedAt is when it was reserved; ExpiresAt is its deadline: a Commit at or after it
	// fails with ErrReservationExpired. Times are UTC with millisecond precision.
	CreatedAt time.Time
	ExpiresAt time.Time
	// ResolvedAt is when it was committed, released, expired or returned; zero while reserved.
	ResolvedAt time.Time
}

// Stock is the state of one SKU. OnHand = Available + Reserved; Sold counts committed
// units, which have left the shelf (returned units are back on hand and no longer sold).
type Stock struct {
	SKU       string
	OnHand    int64
	Available int64
	Reserved  int64
	Sold      int64
	// BuyerLimit is the most units one buyer may hold and buy of the SKU in total
	// (reserved plus committed); 0 means no limit.
	BuyerLimit int64
}

// StockSetting sets a SKU's on-hand count and buyer limit, creating the SKU if needed.
type StockSetting struct {
	SKU string
	// OnHand is the new on-hand count; units already reserved stay reserved, so it may not
	// be below the SKU's reserved count.
	OnHand int64
	// BuyerLimit is the per-buyer limit (0: none). It applies to later reservations.
	BuyerLimit int64
}

// Adjustment changes a SKU's available (and so on-hand) count by Delta: a restock, a
// correction, shrinkage. It is idempotent on ID.
type Adjustment struct {
	ID     string
	SKU    string
	Delta  int64
	Reason string
}
