package ledger

import (
	"fmt"
	"strings"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/hold"
)

// Sentinel errors, for errors.Is; errcode.CodeOf and errcode.ReasonOf read their code and
// reason. The typed errors below carry the details and match these.
var (
	// ErrInvalid: an argument is malformed (empty or too long ID, amount not positive,
	// ...). Nothing was changed. See *ValidationError. It is errcode.ErrInvalidArgument.
	ErrInvalid = errcode.ErrInvalidArgument
	// ErrInsufficientPoints: the available points do not cover the amount. Nothing was
	// changed. See *InsufficientPointsError.
	ErrInsufficientPoints = errcode.New(errcode.FailedPrecondition, "insufficient_points", "ledger: insufficient points")
	// ErrBalanceLimit: a credit would take the user's points past their limit (see
	// MaxBalance). Nothing was changed. See *BalanceLimitError.
	ErrBalanceLimit = errcode.New(errcode.FailedPrecondition, "points_balance_limit", "ledger: balance limit reached")
	// ErrIDReused: the transfer ID was already used for a different operation or content.
	// See *IDReusedError. It matches errcode.ErrKeyReused.
	ErrIDReused = errcode.Derive(errcode.ErrKeyReused, "ledger: transfer ID reused with different content")
	// ErrSpendNotFound: a refund names no spend, or a transfer that is not a spend or a
	// captured hold.
	ErrSpendNotFound = errcode.New(errcode.NotFound, "points_spend_not_found", "ledger: spend not found")
	// ErrRefundExceedsSpend: the refunds of a spend would add up to more than it took. See
	// *RefundError.
	ErrRefundExceedsSpend = errcode.New(errcode.FailedPrecondition, "points_refund_exceeds_spend", "ledger: refund exceeds spend")
	// ErrHoldNotFound: no hold has this ID.
	ErrHoldNotFound = errcode.New(errcode.NotFound, "points_hold_not_found", "ledger: hold not found", hold.ErrGone)
	// ErrHoldCaptured: the hold was already captured (Void, or Capture of another amount).
	ErrHoldCaptured = errcode.New(errcode.Conflict, "points_hold_captured", "ledger: hold already captured", hold.ErrPosted)
	// ErrHoldVoided: the hold was already voided (Capture after Void).
	ErrHoldVoided = errcode.New(errcode.Conflict, "points_hold_voided", "ledger: hold already voided", hold.ErrVoided)
	// ErrHoldExpired: the hold is past its deadline; its points are (or, at the next
	// Sweep, will be) given back.
	ErrHoldExpired = errcode.New(errcode.Conflict, "points_hold_expired", "ledger: hold expired", hold.ErrVoided)
	// ErrCaptureExceedsHold: Capture asked for more than the hold holds.
	ErrCaptureExceedsHold = errcode.New(errcode.FailedPrecondition, "points_capture_exceeds_hold", "ledger: capture exceeds hold")
	// ErrConflict: the stored state changed under the operation in a way the database's
	// locks should have prevented, or contradicts itself. Nothing was changed; run Verify.
	ErrConflict = errcode.New(errcode.Internal, "ledger_conflict", "ledger: conflicting concurrent change")
	// ErrDrift: Verify found balances that do not match the journal. See *DriftError.
	ErrDrift = errcode.New(errcode.Internal, "ledger_drift", "ledger: balances drift from the journal")
	// ErrStorage: the database failed. The native error is wrapped too. With an operation
	// of its own (not joined to a caller's transaction) nothing was changed, and repeating
	// the operation with the same ID is safe.
	ErrStorage = errcode.New(errcode.DependencyUnavailable, "storage_unavailable", "ledger: storage failure")
)

// ValidationError says which argument is wrong and why. It matches ErrInvalid.
type ValidationError = errcode.InvalidError

// InsufficientPointsError reports how many points were available when Requested were
// asked for. It matches ErrInsufficientPoints.
type InsufficientPointsError struct {
	User      string
	Available int64
	Requested int64
}

func (e *InsufficientPointsError) Error() string {
	return fmt.Sprintf("ledger: insufficient points: user %q has %d available, %d requested", e.User, e.Available, e.Requested)
}

// Unwrap returns ErrInsufficientPoints.
func (e *InsufficientPointsError) Unwrap() error { return ErrInsufficientPoints }

// BalanceLimitError reports a credit of Requested points refused because the user's
// points, available and held together, would have become Total, more than Limit
// (MaxBalance, or twice it for a charge or a refund). It matches ErrBalanceLimit.
type BalanceLimitError struct {
	User      string
	Total     int64
	Requested int64
	Limit     int64
}

func (e *BalanceLimitError) Error() string {
	return fmt.Sprintf("ledger: balance limit: crediting %d to user %q would make %d points, more than %d",
		e.Requested, e.User, e.Total, e.Limit)
}

// Unwrap returns ErrBalanceLimit.
func (e *BalanceLimitError) Unwrap() error { return ErrBalanceLimit }

// IDReusedError reports a transfer ID (Key) used again for something else; Kind is the
// EntryType of the transfer that holds the ID, and Err is ErrIDReused.
type IDReusedError = errcode.ReusedError

// RefundError reports a refund beyond what a spend took. It matches ErrRefundExceedsSpend.
type RefundError struct {
	SpendID string
	// Spent is what the spend took (for a captured hold, the captured amount).
	Spent int64
	// Refunded is what earlier refunds already gave back.
	Refunded  int64
	Requested int64
}

func (e *RefundError) Error() string {
	return fmt.Sprintf("ledger: refund of %d exceeds spend %q: spent %d, already refunded %d", e.Requested, e.SpendID, e.Spent, e.Refunded)
}

// Unwrap returns ErrRefundExceedsSpend.
func (e *RefundError) Unwrap() error { return ErrRefundExceedsSpend }

// HoldError reports why Capture or Void cannot act on a hold. It matches exactly one of
// ErrHoldNotFound, ErrHoldCaptured, ErrHoldVoided, ErrHoldExpired and ErrCaptureExceedsHold.
type HoldError struct {
	HoldID string
	// State is the hold's state; HoldExpired also for a hold past its deadline that Sweep
	// has not released yet. Empty when the hold does not exist.
	State HoldState
	// Amount is what the hold holds; Captured what was captured (HoldCaptured).
	Amount, Captured int64
	// Requested is the amount Capture asked for (0 for Void).
	Requested int64
	// Err is the matching sentinel.
	Err error
}

func (e *HoldError) Error() string {
	switch e.Err {
	case ErrHoldNotFound:
		return fmt.Sprintf("ledger: hold %q not found", e.HoldID)
	case ErrCaptureExceedsHold:
		return fmt.Sprintf("ledger: capture of %d exceeds hold %q of %d", e.Requested, e.HoldID, e.Amount)
	case ErrHoldCaptured:
		return fmt.Sprintf("ledger: hold %q already captured (%d of %d)", e.HoldID, e.Captured, e.Amount)
	}
	return fmt.Sprintf("ledger: hold %q is %s", e.HoldID, e.State)
}

// Unwrap returns the matching sentinel.
func (e *HoldError) Unwrap() error { return e.Err }

// DriftError carries what Verify found. It matches ErrDrift.
type DriftError struct {
	Drift []Drift
}

func (e *DriftError) Error() string {
	parts := make([]string, 0, min(len(e.Drift), 5))
	for i, d := range e.Drift {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(e.Drift)-5))
			break
		}
		parts = append(parts, d.String())
	}
	return fmt.Sprintf("ledger: %d drift(s): %s", len(e.Drift), strings.Join(parts, "; "))
}

// Unwrap returns ErrDrift.
func (e *DriftError) Unwrap() error { return ErrDrift }
