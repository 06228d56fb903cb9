package inventory

import (
	"fmt"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/hold"
)

// Sentinel errors, for errors.Is; errcode.CodeOf and errcode.ReasonOf read their code and
// reason. The typed errors below carry the detail (errors.As) and match their sentinel.
var (
	// ErrInvalidRequest: the request breaks a rule checked before any I/O, or an Adjust
	// would take the on-hand count past MaxOnHand (checked by the backend); nothing changed.
	// Every *ValidationError matches it. It is errcode.ErrInvalidArgument.
	ErrInvalidRequest = errcode.ErrInvalidArgument
	// ErrInvalidQuantity: a quantity is out of range: zero or negative where it must be
	// positive, or past MaxOnHand (an on-hand count, a delta, or the on-hand count an Adjust
	// would leave). Also matches ErrInvalidRequest.
	ErrInvalidQuantity = errcode.Derive(errcode.ErrInvalidArgument, "inventory: quantity out of range")
	// ErrTooManyLines: a reservation has more than MaxLines lines (also matches ErrInvalidRequest).
	ErrTooManyLines = errcode.New(errcode.FailedPrecondition, "too_many_lines", "inventory: too many lines", ErrInvalidRequest)
	// ErrQuantityTooLarge: more than MaxQtyPerSKU units of one SKU (also matches ErrInvalidRequest).
	ErrQuantityTooLarge = errcode.New(errcode.FailedPrecondition, "quantity_too_large", "inventory: quantity too large", ErrInvalidRequest)

	// ErrUnknownSKU: no stock was ever set for the SKU (*UnknownSKUError).
	ErrUnknownSKU = errcode.New(errcode.NotFound, "product_not_found", "inventory: unknown SKU")
	// ErrInsufficientStock: fewer units are available than asked for (*InsufficientStockError).
	ErrInsufficientStock = errcode.New(errcode.FailedPrecondition, "out_of_stock", "inventory: insufficient stock")
	// ErrBuyerLimitExceeded: the buyer would hold more of a SKU than its buyer limit, or the
	// SKU has a limit and the reservation names no buyer (*BuyerLimitError).
	ErrBuyerLimitExceeded = errcode.New(errcode.FailedPrecondition, "buyer_limit_exceeded", "inventory: buyer limit exceeded")
	// ErrIdempotencyConflict: an ID was used before with different content (*ConflictError).
	// It matches errcode.ErrKeyReused.
	ErrIdempotencyConflict = errcode.Derive(errcode.ErrKeyReused, "inventory: ID reused with different content")

	// ErrReservationNotFound: no reservation has the ID.
	ErrReservationNotFound = errcode.New(errcode.NotFound, "reservation_not_found", "inventory: reservation not found", hold.ErrGone)
	// ErrReservationCommitted: the reservation was committed, so it cannot be released (*StateError).
	ErrReservationCommitted = errcode.New(errcode.Conflict, "reservation_committed", "inventory: reservation already committed", hold.ErrPosted)
	// ErrReservationReleased: the reservation was released, so it cannot be committed (*StateError).
	ErrReservationReleased = errcode.New(errcode.Conflict, "reservation_released", "inventory: reservation already released", hold.ErrVoided)
	// ErrReservationExpired: the reservation passed its deadline and its units went back (*StateError).
	ErrReservationExpired = errcode.New(errcode.Conflict, "reservation_expired", "inventory: reservation expired", hold.ErrVoided)
	// ErrReservationReturned: the reservation was committed and then returned (*StateError).
	ErrReservationReturned = errcode.New(errcode.Conflict, "reservation_returned", "inventory: reservation returned", hold.ErrPosted)
	// ErrReservationNotCommitted: Return of a reservation that is still reserved (*StateError).
	ErrReservationNotCommitted = errcode.New(errcode.Conflict, "reservation_not_committed", "inventory: reservation not committed")

	// ErrContention: the storage gave up on a lock conflict (a MySQL deadlock or lock wait
	// timeout) after the bounded retries, or at once inside the caller's transaction, which
	// the caller must run again. The native error stays in the chain too.
	ErrContention = errcode.New(errcode.DependencyUnavailable, "contention", "inventory: storage contention, try again")
)

// ValidationError says which field of a request is wrong and why. It matches
// ErrInvalidRequest, and Err, the specific sentinel (ErrInvalidQuantity, ...), when set.
type ValidationError = errcode.InvalidError

// UnknownSKUError names the unknown SKU.
type UnknownSKUError struct{ SKU string }

func (e *UnknownSKUError) Error() string { return fmt.Sprintf("inventory: unknown SKU %q", e.SKU) }

// Unwrap returns ErrUnknownSKU.
func (e *UnknownSKUError) Unwrap() error { return ErrUnknownSKU }

// InsufficientStockError says which SKU ran short, how many units were asked for and how
// many were available.
type InsufficientStockError struct {
	SKU       string
	Requested int64
	Available int64
}

func (e *InsufficientStockError) Error() string {
	return fmt.Sprintf("inventory: insufficient stock of %q: requested %d, available %d", e.SKU, e.Requested, e.Available)
}

// Unwrap returns ErrInsufficientStock.
func (e *InsufficientStockError) Unwrap() error { return ErrInsufficientStock }

// BuyerLimitError says which SKU's limit a buyer would exceed. Used is what the buyer
// already holds or bought; BuyerID is empty when the reservation named no buyer.
type BuyerLimitError struct {
	SKU       string
	BuyerID   string
	Limit     int64
	Used      int64
	Requested int64
}

func (e *BuyerLimitError) Error() string {
	if e.BuyerID == "" {
		return fmt.Sprintf("inventory: SKU %q is limited to %d per buyer and the reservation names no buyer", e.SKU, e.Limit)
	}
	return fmt.Sprintf("inventory: buyer %q would exceed the limit of %d of %q: holds %d, requested %d",
		e.BuyerID, e.Limit, e.SKU, e.Used, e.Requested)
}

// Unwrap returns ErrBuyerLimitExceeded.
func (e *BuyerLimitError) Unwrap() error { return ErrBuyerLimitExceeded }

// ConflictError names the reused ID (Key) and what it identifies (Kind: "reservation",
// "adjustment"); Err is ErrIdempotencyConflict. NewConflictError makes one.
type ConflictError = errcode.ReusedError

// NewConflictError returns the *ConflictError a Backend answers when the ID of a
// reservation or adjustment (kind) was used before with other content.
func NewConflictError(kind, id string) error {
	return &ConflictError{Kind: kind, Key: id, Err: ErrIdempotencyConflict}
}

// StateError says a reservation is already resolved in a way that forbids the operation.
type StateError struct {
	ID    string
	State State
}

func (e *StateError) Error() string {
	return fmt.Sprintf("inventory: reservation %q is %s", e.ID, e.State)
}

// Unwrap returns the sentinel of the state: ErrReservationCommitted, ErrReservationReleased,
// ErrReservationExpired, ErrReservationReturned, or ErrReservationNotCommitted (reserved).
func (e *StateError) Unwrap() error {
	switch e.State {
	case StateCommitted:
		return ErrReservationCommitted
	case StateReleased:
		return ErrReservationReleased
	case StateExpired:
		return ErrReservationExpired
	case StateReturned:
		return ErrReservationReturned
	case StateReserved:
		return ErrReservationNotCommitted
	}
	return nil
}

// OnHandPastMax returns the *ValidationError (matching ErrInvalidQuantity, as SetStock's
// refusal of an on-hand count past MaxOnHand does) a Backend answers when an Adjust of sku,
// whose on-hand count is onHand, would take it past MaxOnHand. For backends.
func OnHandPastMax(sku string, onHand, delta int64) error {
	return &ValidationError{
		Field:  "delta",
		Reason: fmt.Sprintf("%+d would take the on-hand count of %s from %d past %d", delta, sku, onHand, int64(MaxOnHand)),
		Err:    ErrInvalidQuantity,
	}
}

// NotFound returns an error matching ErrReservationNotFound that names id. For backends.
func NotFound(id string) error { return fmt.Errorf("%w: %q", ErrReservationNotFound, id) }

// Contention wraps a native lock-conflict error so it matches ErrContention and stays
// recognisable to the caller's own retry logic. For backends.
func Contention(err error) error { return fmt.Errorf("%w: %w", ErrContention, err) }
