package inventory

import (
	"context"
	"time"

	"github.com/uptrace/bun"
)

// Backend is what a storage must do for an Inventory: only the atomic operations, on
// requests the Inventory has already validated and normalized. Implementations live in
// subpackages (redisinventory, sqlinventory) and prove themselves with inventorytest.Run.
//
// A Backend returns the errors of this package (typed errors and sentinels) for every
// domain outcome, context errors as they are, and wraps anything else.
type Backend interface {
	// Reserve stores r (State reserved, lines sorted and summed, times set) and takes its
	// units, all lines or none, enforcing each SKU's buyer limit when r.BuyerID is set and
	// refusing a limited SKU when it is not. When a reservation with r.ID exists with the
	// same lines and buyer, it returns that one unchanged, in whatever state it is (the
	// Inventory refuses to report a dead one as a success); with different ones, a
	// *ConflictError.
	Reserve(ctx context.Context, r Reservation) (Reservation, error)
	// Commit moves the units of a reserved reservation from reserved to sold, or, when now is
	// at or past its deadline, expires it (units back to available, buyer allowance back).
	// It returns the reservation's final state: StateCommitted also when it was committed
	// before; otherwise the caller turns the state into an error. Unknown IDs give
	// ErrReservationNotFound.
	Commit(ctx context.Context, id string, now time.Time) (State, error)
	// Release gives a reserved reservation's units back to available and its buyer
	// allowance back, as StateReleased, or as StateExpired when now is at or past its
	// deadline. It returns the final state like Commit.
	Release(ctx context.Context, id string, now time.Time) (State, error)
	// Return gives a committed reservation's units back (sold → available, buyer allowance
	// back), as StateReturned, at most once: it returns the final state like Commit
	// (StateReturned also when it was returned before). It must stay idempotent for as long
	// as the reservation is known, whatever the retention.
	Return(ctx context.Context, id string, now time.Time) (State, error)
	// Get returns a reservation as stored.
	Get(ctx context.Context, id string) (Reservation, error)
	// Expire expires at most limit reservations whose deadline is at or before now and
	// returns how many it expired.
	Expire(ctx context.Context, now time.Time, limit int) (int, error)
	// SetStock creates the SKU or sets its on-hand count and buyer limit; it fails with
	// *InsufficientStockError when OnHand is below the reserved count.
	SetStock(ctx context.Context, s StockSetting) (Stock, error)
	// Adjust adds a.Delta to the SKU's available count, at most once per a.ID, and returns
	// the stock after it (or, on a replay, as it is now). A negative delta larger than the
	// available count gives *InsufficientStockError, and a positive one that would take the
	// on-hand count past MaxOnHand the error of OnHandPastMax; either changes nothing and
	// records no ID.
	Adjust(ctx context.Context, a Adjustment, now time.Time) (Stock, error)
	// Stocks reads the given distinct SKUs in one round trip; unknown ones are absent.
	Stocks(ctx context.Context, skus []string) (map[string]Stock, error)
}

// TxBackend is a Backend that can join the caller's SQL transaction.
type TxBackend interface {
	Backend
	// WithTx returns the backend operating on db: inside the transaction when db is a
	// bun.Tx, else in transactions of its own on db.
	WithTx(db bun.IDB) Backend
}
