package commerce

import (
	"errors"
	"fmt"
	"time"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
)

// Sentinel errors, for errors.Is; errcode.CodeOf and errcode.ReasonOf read their code and
// reason. Errors caused by a leaf package wrap both the sentinel here and the leaf's own
// error (errors.As finds e.g. *inventory.InsufficientStockError).
var (
	// ErrInvalidConfig: New was given a Config or option it cannot work with.
	// It matches errcode.ErrInvalidArgument too, with the code Internal: a misconfigured
	// server, not a client's mistake.
	ErrInvalidConfig = errcode.New(errcode.Internal, "invalid_config", "commerce: invalid configuration", errcode.ErrInvalidArgument)
	// ErrInvalidRequest: a request failed validation and changed nothing (*ValidationError).
	// It is errcode.ErrInvalidArgument.
	ErrInvalidRequest = errcode.ErrInvalidArgument
	// ErrIdempotencyConflict: an idempotency key (or product ID) was used before for a
	// different request (*ConflictError). It matches errcode.ErrKeyReused.
	ErrIdempotencyConflict = errcode.Derive(errcode.ErrKeyReused, "commerce: idempotency key reused with a different request")

	// ErrProductNotFound: no product has the ID.
	ErrProductNotFound = errcode.New(errcode.NotFound, "product_not_found", "commerce: product not found")
	// ErrOrderNotFound: no order has the ID, or it belongs to another user.
	ErrOrderNotFound = errcode.New(errcode.NotFound, "order_not_found", "commerce: order not found")
	// ErrTopUpNotFound: no top-up has the ID, or it belongs to another user.
	ErrTopUpNotFound = errcode.New(errcode.NotFound, "top_up_not_found", "commerce: top-up not found")

	// ErrOutOfStock: too few units are available (wraps *inventory.InsufficientStockError).
	ErrOutOfStock = errcode.New(errcode.FailedPrecondition, "out_of_stock", "commerce: out of stock")
	// ErrBuyerLimit: the user would buy more of a product than its buyer limit (wraps
	// *inventory.BuyerLimitError).
	ErrBuyerLimit = errcode.New(errcode.FailedPrecondition, "buyer_limit_exceeded", "commerce: buyer limit exceeded")
	// ErrCouponUnusable: the coupon cannot be applied to the order (wraps *coupon.RedeemError).
	ErrCouponUnusable = errcode.New(errcode.FailedPrecondition, "coupon_unusable", "commerce: coupon cannot be used")
	// ErrInsufficientPoints: the user has fewer points than asked for (wraps
	// *ledger.InsufficientPointsError).
	ErrInsufficientPoints = errcode.New(errcode.FailedPrecondition, "insufficient_points", "commerce: insufficient points")
	// ErrPaymentRule: the payment breaks a method rule (wraps *payment.PlanError).
	ErrPaymentRule = errcode.New(errcode.FailedPrecondition, "payment_rule_violated", "commerce: payment method rule broken")

	// ErrInvalidState: the order's status does not allow the operation (*StateError).
	ErrInvalidState = errcode.New(errcode.Conflict, "invalid_order_state", "commerce: operation not allowed in the order's status")
	// ErrOrderExpired: the order expired before it was paid.
	ErrOrderExpired = errcode.New(errcode.Conflict, "order_expired", "commerce: order expired")
	// ErrCancelWindowClosed: a paid order is past its cancel window (*CancelWindowError).
	ErrCancelWindowClosed = errcode.New(errcode.FailedPrecondition, "cancel_window_closed", "commerce: cancel window closed")
	// ErrRewardSpent: a paid order cannot be cancelled because the part of its reward the
	// user spent is more than the cancellation would refund; nothing was changed. Since
	// the reward is at most the amount paid this only happens to an order whose row was
	// written by something else: a spent reward does not stop a cancellation, it reduces
	// its refund (see Cancel). Before that rule, every cancellation of an order whose
	// reward was spent failed with it.
	ErrRewardSpent = errcode.New(errcode.FailedPrecondition, "reward_spent", "commerce: reward points already spent")
	// ErrRefundRejected: the PG refused the refund of a cancelled order; the order stays
	// PAID (wraps payment.ErrRefundRejected).
	ErrRefundRejected = errcode.New(errcode.FailedPrecondition, "refund_rejected", "commerce: refund rejected")

	// ErrInjected: the fault hook stopped a flow (tests only).
	ErrInjected = errcode.New(errcode.Internal, "injected", "commerce: injected fault")
)

// ValidationError says which field of a request is wrong and why. It matches
// ErrInvalidRequest.
type ValidationError = errcode.InvalidError

// ConflictError names the reused key (Key) and what it identifies (Kind: "order",
// "payment", "top-up", "product"); Err is ErrIdempotencyConflict. NewConflictError makes one.
type ConflictError = errcode.ReusedError

// NewConflictError returns the *ConflictError for a key of kind used before for another
// request.
func NewConflictError(kind, key string) error {
	return &ConflictError{Kind: kind, Key: key, Err: ErrIdempotencyConflict}
}

// StateError says an operation is not allowed in the order's current status.
type StateError struct {
	OrderID string
	Op      string
	Status  Status
}

func (e *StateError) Error() string {
	return fmt.Sprintf("commerce: cannot %s order %s in status %s", e.Op, e.OrderID, e.Status)
}

// Unwrap returns ErrInvalidState.
func (e *StateError) Unwrap() error { return ErrInvalidState }

// CancelWindowError says when a paid order's cancel window closed.
type CancelWindowError struct {
	OrderID  string
	PaidAt   time.Time
	Deadline time.Time
}

func (e *CancelWindowError) Error() string {
	return fmt.Sprintf("commerce: order %s was paid at %s; it could be cancelled until %s",
		e.OrderID, e.PaidAt.Format(time.RFC3339), e.Deadline.Format(time.RFC3339))
}

// Unwrap returns ErrCancelWindowClosed.
func (e *CancelWindowError) Unwrap() error { return ErrCancelWindowClosed }

func invalid(field, reason string) error { return errcode.Invalid(field, reason) }

// leafError adds commerce's sentinel to a leaf's domain error, keeping the leaf's error in
// the chain for errors.As; other errors are returned as they are.
func leafError(err error) error {
	var (
		redeem *coupon.RedeemError
		plan   *payment.PlanError
	)
	var sentinel error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, inventory.ErrInsufficientStock), errors.Is(err, inventory.ErrUnknownSKU):
		sentinel = ErrOutOfStock
	case errors.Is(err, inventory.ErrBuyerLimitExceeded):
		sentinel = ErrBuyerLimit
	case errors.As(err, &redeem):
		sentinel = ErrCouponUnusable
	case errors.Is(err, ledger.ErrInsufficientPoints):
		sentinel = ErrInsufficientPoints
	case errors.As(err, &plan):
		sentinel = ErrPaymentRule
	default:
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}
