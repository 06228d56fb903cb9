package commerce

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
)

// Sentinel errors, for errors.Is. Errors caused by a leaf package wrap both the sentinel
// here and the leaf's own error (errors.As finds e.g. *inventory.InsufficientStockError).
var (
	// ErrInvalidConfig: New was given a Config or option it cannot work with.
	ErrInvalidConfig = errors.New("commerce: invalid configuration")
	// ErrInvalidRequest: a request failed validation and changed nothing (*ValidationError).
	ErrInvalidRequest = errors.New("commerce: invalid request")
	// ErrIdempotencyConflict: an idempotency key (or product ID) was used before for a
	// different request (*ConflictError).
	ErrIdempotencyConflict = errors.New("commerce: idempotency key reused with a different request")

	// ErrProductNotFound: no product has the ID.
	ErrProductNotFound = errors.New("commerce: product not found")
	// ErrOrderNotFound: no order has the ID, or it belongs to another user.
	ErrOrderNotFound = errors.New("commerce: order not found")
	// ErrTopUpNotFound: no top-up has the ID, or it belongs to another user.
	ErrTopUpNotFound = errors.New("commerce: top-up not found")

	// ErrOutOfStock: too few units are available (wraps *inventory.InsufficientStockError).
	ErrOutOfStock = errors.New("commerce: out of stock")
	// ErrBuyerLimit: the user would buy more of a product than its buyer limit (wraps
	// *inventory.BuyerLimitError).
	ErrBuyerLimit = errors.New("commerce: buyer limit exceeded")
	// ErrCouponUnusable: the coupon cannot be applied to the order (wraps *coupon.RedeemError).
	ErrCouponUnusable = errors.New("commerce: coupon cannot be used")
	// ErrInsufficientPoints: the user has fewer points than asked for (wraps
	// *ledger.InsufficientPointsError).
	ErrInsufficientPoints = errors.New("commerce: insufficient points")
	// ErrPaymentRule: the payment breaks a method rule (wraps *payment.PlanError).
	ErrPaymentRule = errors.New("commerce: payment method rule broken")

	// ErrInvalidState: the order's status does not allow the operation (*StateError).
	ErrInvalidState = errors.New("commerce: operation not allowed in the order's status")
	// ErrOrderExpired: the order expired before it was paid.
	ErrOrderExpired = errors.New("commerce: order expired")
	// ErrCancelWindowClosed: a paid order is past its cancel window (*CancelWindowError).
	ErrCancelWindowClosed = errors.New("commerce: cancel window closed")
	// ErrRewardSpent: a paid order cannot be cancelled because the user no longer has the
	// reward points it earned (wraps *ledger.InsufficientPointsError).
	ErrRewardSpent = errors.New("commerce: reward points already spent")
	// ErrRefundRejected: the PG refused the refund of a cancelled order; the order stays
	// PAID (wraps payment.ErrRefundRejected).
	ErrRefundRejected = errors.New("commerce: refund rejected")

	// ErrInjected: the fault hook stopped a flow (tests only).
	ErrInjected = errors.New("commerce: injected fault")
)

// ValidationError says which field of a request is wrong and why. It matches
// ErrInvalidRequest.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("commerce: invalid %s: %s", e.Field, e.Reason)
}

// Unwrap returns ErrInvalidRequest.
func (e *ValidationError) Unwrap() error { return ErrInvalidRequest }

// ConflictError names the reused key and what it identifies ("order", "payment",
// "top-up", "product").
type ConflictError struct {
	Kind string
	Key  string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("commerce: %s key %q reused with a different request", e.Kind, e.Key)
}

// Unwrap returns ErrIdempotencyConflict.
func (e *ConflictError) Unwrap() error { return ErrIdempotencyConflict }

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

// codes maps sentinels to stable snake_case codes, in matching order.
var codes = []struct {
	err  error
	code string
}{
	{ErrInvalidRequest, "invalid_request"},
	{ErrIdempotencyConflict, "idempotency_conflict"},
	{ErrProductNotFound, "product_not_found"},
	{ErrOrderNotFound, "order_not_found"},
	{ErrTopUpNotFound, "top_up_not_found"},
	{ErrOutOfStock, "out_of_stock"},
	{ErrBuyerLimit, "buyer_limit"},
	{ErrUnpaidLimit, "unpaid_limit"},
	{ErrCouponUnusable, "coupon_unusable"},
	{ErrInsufficientPoints, "insufficient_points"},
	{ErrPaymentRule, "payment_rule"},
	{ErrOrderExpired, "order_expired"},
	{ErrCancelWindowClosed, "cancel_window_closed"},
	{ErrRewardSpent, "reward_spent"},
	{ErrRefundRejected, "refund_rejected"},
	{ErrInvalidState, "invalid_state"},
	{ErrInvalidConfig, "invalid_config"},
	{ErrInjected, "injected"},
}

// Code returns a stable snake_case code for the package's sentinel that err wraps
// ("out_of_stock", "order_not_found", ...), "canceled" or "deadline_exceeded" for context
// errors, "" for nil and "internal" for anything else: for metric labels and for mapping
// errors to API responses in one place.
func Code(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	}
	return "internal"
}

func invalid(field, reason string) error { return &ValidationError{Field: field, Reason: reason} }

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
