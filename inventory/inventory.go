package inventory

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/observe"
)

// Inventory is the portable stock-reservation API. It validates and normalizes every
// request once, reads the clock, and hands the atomic work to its Backend. It is safe for
// concurrent use.
type Inventory struct {
	b   Backend
	cfg config
}

// New returns an Inventory over b. An option given an invalid value (see each option) is
// refused with an *errcode.InvalidError naming it (ErrInvalidRequest), and no Inventory.
func New(b Backend, opts ...Option) (*Inventory, error) {
	cfg := defaults()
	if err := option.Apply(&cfg, opts); err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	return &Inventory{b: b, cfg: cfg}, nil
}

// JoinsTx reports whether WithTx makes operations join the caller's SQL transaction. When
// it is false (Redis), a reservation made during the caller's transaction stays when that
// transaction rolls back: release it, or let its deadline expire it.
func (inv *Inventory) JoinsTx() bool {
	_, ok := inv.b.(TxBackend)
	return ok
}

// WithTx returns a copy of the Inventory whose operations run on db: inside the caller's
// transaction when db is a bun.Tx (under a savepoint, so a failed operation undoes only
// its own writes), else in transactions of their own on db. For a backend that cannot
// join (JoinsTx is false) it returns inv itself.
func (inv *Inventory) WithTx(db bun.IDB) *Inventory {
	tb, ok := inv.b.(TxBackend)
	if !ok {
		return inv
	}
	return &Inventory{b: tb.WithTx(db), cfg: inv.cfg}
}

// now is the clock's time in UTC, truncated to the millisecond every backend stores.
func (inv *Inventory) now() time.Time {
	return inv.cfg.clock().UTC().Truncate(time.Millisecond)
}

// observe reports an operation to the Observer, if any; start is zero without one.
func (inv *Inventory) observe(op Op, start time.Time, err error) {
	if inv.cfg.obs != nil {
		inv.cfg.obs.Observe(observe.Timed("inventory", string(op), start, err))
	}
}

func (inv *Inventory) start() time.Time {
	if inv.cfg.obs == nil {
		return time.Time{}
	}
	return time.Now()
}

// Reserve holds the units of every line of req, or of none. It is idempotent on req.ID:
// the same request again (lines in any order or split, same buyer) returns the original
// reservation as it is now and takes nothing; the same ID with other lines or another
// buyer fails with *ConflictError. A replay never revives a dead reservation: when the
// reservation with req.ID was released, expired or returned, Reserve fails with *StateError
// (ErrReservationReleased, ErrReservationExpired, ErrReservationReturned) and takes nothing.
//
// Errors: *ValidationError (ErrInvalidRequest, ErrInvalidQuantity, ErrTooManyLines,
// ErrQuantityTooLarge), *UnknownSKUError, *InsufficientStockError (the first short SKU in
// SKU order, with what was available), *BuyerLimitError, *ConflictError, ErrContention.
func (inv *Inventory) Reserve(ctx context.Context, req ReserveRequest) (Reservation, error) {
	start := inv.start()
	r, err := newReservation(req, inv.now(), inv.cfg.defaultTTL)
	if err == nil {
		r, err = inv.b.Reserve(ctx, r)
	}
	if err == nil && r.State.Dead() {
		err = &StateError{ID: r.ID, State: r.State}
	}
	inv.observe(OpReserve, start, err)
	if err != nil {
		return Reservation{}, err
	}
	return r, nil
}

// Commit turns a reservation's units from reserved into sold. Committing a committed
// reservation again succeeds and changes nothing. It fails with ErrReservationNotFound,
// and with *StateError matching ErrReservationReleased or ErrReservationExpired; a
// reservation at or past its deadline is expired by this call (its units go back) and
// fails with ErrReservationExpired.
func (inv *Inventory) Commit(ctx context.Context, id string) error {
	start := inv.start()
	err := checkID("id", id)
	if err == nil {
		var st State
		if st, err = inv.b.Commit(ctx, id, inv.now()); err == nil && st != StateCommitted {
			err = &StateError{ID: id, State: st}
		}
	}
	inv.observe(OpCommit, start, err)
	return err
}

// Release gives a reservation's units back to available and its buyer allowance back.
// Releasing a released reservation again succeeds and changes nothing. It fails with
// ErrReservationNotFound, and with *StateError matching ErrReservationCommitted or
// ErrReservationExpired (also when the deadline passed and this call expired it).
func (inv *Inventory) Release(ctx context.Context, id string) error {
	start := inv.start()
	err := checkID("id", id)
	if err == nil {
		var st State
		if st, err = inv.b.Release(ctx, id, inv.now()); err == nil && st != StateReleased {
			err = &StateError{ID: id, State: st}
		}
	}
	inv.observe(OpRelease, start, err)
	return err
}

// Return gives the units of a committed reservation back to available (a cancelled or
// returned purchase): they no longer count as sold nor against the buyer's limit. It is
// idempotent forever: returning a returned reservation succeeds and changes nothing. It
// fails with ErrReservationNotFound, and with *StateError matching
// ErrReservationNotCommitted (still reserved), ErrReservationReleased or
// ErrReservationExpired.
func (inv *Inventory) Return(ctx context.Context, id string) error {
	start := inv.start()
	err := checkID("id", id)
	if err == nil {
		var st State
		if st, err = inv.b.Return(ctx, id, inv.now()); err == nil && st != StateReturned {
			err = &StateError{ID: id, State: st}
		}
	}
	inv.observe(OpReturn, start, err)
	return err
}

// Get returns a reservation: its state, lines, buyer and deadline. A reservation still
// reserved past its deadline shows StateReserved until a sweep or a Commit/Release expires it.
func (inv *Inventory) Get(ctx context.Context, id string) (Reservation, error) {
	start := inv.start()
	err := checkID("id", id)
	var r Reservation
	if err == nil {
		r, err = inv.b.Get(ctx, id)
	}
	inv.observe(OpGet, start, err)
	if err != nil {
		return Reservation{}, err
	}
	return r, nil
}

// SetStock creates a SKU or sets its on-hand count and buyer limit, and returns the stock
// after it. Reserved units stay reserved: OnHand below the reserved count fails with
// *InsufficientStockError. The count is absolute: the same setting again changes nothing
// only while nothing was committed in between; sent again after a sale (a retry after a
// lost answer), it puts the sold units back. A change that may be retried is an Adjust.
func (inv *Inventory) SetStock(ctx context.Context, s StockSetting) (Stock, error) {
	start := inv.start()
	err := checkStockSetting(s)
	var st Stock
	if err == nil {
		st, err = inv.b.SetStock(ctx, s)
	}
	inv.observe(OpSetStock, start, err)
	return st, err
}

// Adjust changes a SKU's available count by a.Delta (restock, correction) once per a.ID and
// returns the stock after it; a replay returns the stock as it is now, and the same ID with
// other content fails with *ConflictError. It fails with *UnknownSKUError, with
// *InsufficientStockError when a negative delta exceeds what is available, and with
// *ValidationError matching ErrInvalidQuantity when the delta is zero or past ±MaxOnHand
// or would take the on-hand count past MaxOnHand. A refused adjustment changes nothing
// and leaves no record of its ID.
func (inv *Inventory) Adjust(ctx context.Context, a Adjustment) (Stock, error) {
	start := inv.start()
	err := checkAdjustment(a)
	var st Stock
	if err == nil {
		st, err = inv.b.Adjust(ctx, a, inv.now())
	}
	inv.observe(OpAdjust, start, err)
	return st, err
}

// Stock reads one SKU; an unknown SKU fails with *UnknownSKUError.
func (inv *Inventory) Stock(ctx context.Context, sku string) (Stock, error) {
	m, err := inv.Stocks(ctx, []string{sku})
	if err != nil {
		return Stock{}, err
	}
	st, ok := m[sku]
	if !ok {
		return Stock{}, &UnknownSKUError{SKU: sku}
	}
	return st, nil
}

// Stocks reads up to MaxStocksPerCall SKUs in one round trip to the storage. Unknown SKUs
// are absent from the map.
func (inv *Inventory) Stocks(ctx context.Context, skus []string) (map[string]Stock, error) {
	start := inv.start()
	skus, err := normalizeSKUs(skus)
	var m map[string]Stock
	if err == nil {
		if len(skus) == 0 {
			m = map[string]Stock{}
		} else {
			m, err = inv.b.Stocks(ctx, skus)
		}
	}
	inv.observe(OpStocks, start, err)
	return m, err
}
