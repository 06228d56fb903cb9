package coupon

import (
	"errors"
	"fmt"
	"time"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/hold"
	"github.com/commercekit/commercekit/internal/depfail"
)

// Sentinel errors, for errors.Is; errcode.CodeOf and errcode.ReasonOf read their code and
// reason. Rejections come wrapped in a typed error with detail (ValidationError,
// IssueError, RedeemError) for errors.As.
var (
	// ErrInvalidTemplate: a template failed validation (see ValidationError). Nothing was
	// stored. It also matches ErrInvalidArgument.
	ErrInvalidTemplate = errcode.New(errcode.InvalidArgument, "invalid_coupon_template", "coupon: invalid template", ErrInvalidArgument)
	// ErrInvalidArgument: an ID, amount, cursor or option is malformed (see
	// ValidationError). It is errcode.ErrInvalidArgument.
	ErrInvalidArgument = errcode.ErrInvalidArgument
	// ErrTemplateNotFound: no template has that ID.
	ErrTemplateNotFound = errcode.New(errcode.NotFound, "coupon_template_not_found", "coupon: template not found")
	// ErrTemplateExists: a template with that ID exists with different terms.
	ErrTemplateExists = errcode.New(errcode.AlreadyExists, "coupon_template_exists", "coupon: template exists with different terms")

	// ErrNotStarted: the template's issue window has not opened yet.
	ErrNotStarted = errcode.New(errcode.FailedPrecondition, "coupon_issue_not_started", "coupon: issuance has not started")
	// ErrEnded: the template's issue window has closed (or its use-by date has passed).
	ErrEnded = errcode.New(errcode.FailedPrecondition, "coupon_issue_ended", "coupon: issuance has ended")
	// ErrSoldOut: the template's total quantity has been issued.
	ErrSoldOut = errcode.New(errcode.FailedPrecondition, "coupon_sold_out", "coupon: sold out")
	// ErrLimitReached: the user already holds the template's per-user limit.
	ErrLimitReached = errcode.New(errcode.FailedPrecondition, "coupon_limit_reached", "coupon: per-user limit reached")
	// ErrRequestConflict: the request ID was already used to issue a coupon of another
	// template or to another user. It matches errcode.ErrKeyReused.
	ErrRequestConflict = errcode.Derive(errcode.ErrKeyReused, "coupon: request ID already used for another issuance")
	// ErrCannotJoinTx: Issue was called through WithTx(tx) with an issuer that cannot join a
	// SQL transaction (Redis); issue through the Service itself.
	ErrCannotJoinTx = errcode.New(errcode.Internal, "cannot_join_tx", "coupon: issuer cannot join the caller's transaction")
	// ErrOtherIssuer: the template's coupons are issued by another issuer than the
	// Service's (a Redis issuer and a SQL issuer serving one template: an instance not yet
	// replaced in a switch from one to the other, or two instances configured differently).
	// Nothing was issued. It is not the caller's fault, and a retry may reach an instance
	// with the template's issuer: errcode.DependencyUnavailable (refserver: 503 with
	// Retry-After). Service.ClaimIssuance and ClaimAllIssuance move templates to another issuer.
	ErrOtherIssuer = errcode.New(errcode.DependencyUnavailable, "coupon_other_issuer", "coupon: the template is issued by another issuer")
	// ErrNotLoaded is for issuer backends: their state for a template is missing (never
	// loaded, or lost) and must be loaded from SQL. The Service handles it; callers never see it.
	ErrNotLoaded = errors.New("coupon: issuer state not loaded")

	// ErrCouponNotFound: no coupon has that ID.
	ErrCouponNotFound = errcode.New(errcode.NotFound, "coupon_not_found", "coupon: coupon not found")
	// ErrNotOwner: the coupon belongs to another user (answered like ErrCouponNotFound, so
	// that nobody learns which coupon IDs exist).
	ErrNotOwner = errcode.New(errcode.NotFound, "coupon_not_found", "coupon: coupon belongs to another user")
	// ErrNotAvailable: the coupon is reserved by or used for another order.
	ErrNotAvailable = errcode.New(errcode.FailedPrecondition, "coupon_unusable", "coupon: coupon is not available")
	// ErrNotYetUsable: the coupon's usable-from date has not come yet.
	ErrNotYetUsable = errcode.New(errcode.FailedPrecondition, "coupon_unusable", "coupon: coupon is not usable yet")
	// ErrExpired: the coupon's use-by date has passed.
	ErrExpired = errcode.New(errcode.FailedPrecondition, "coupon_unusable", "coupon: coupon has expired")
	// ErrBelowMinimum: the order amount is below the coupon's minimum order amount.
	ErrBelowMinimum = errcode.New(errcode.FailedPrecondition, "coupon_unusable", "coupon: order amount below the coupon's minimum")
	// ErrRedemptionNotFound: the order has reserved no coupon.
	ErrRedemptionNotFound = errcode.New(errcode.NotFound, "coupon_redemption_not_found", "coupon: no redemption for the order", hold.ErrGone)
	// ErrRedemptionClosed: the order's redemption of the coupon was restored; it cannot be
	// reserved again under the same order ID, nor confirmed.
	ErrRedemptionClosed = errcode.New(errcode.Conflict, "coupon_redemption_restored", "coupon: redemption already restored", hold.ErrVoided)
	// ErrRedemptionConflict: the order already reserved the coupon for another order amount.
	ErrRedemptionConflict = errcode.New(errcode.Conflict, "coupon_redemption_conflict", "coupon: order reserved the coupon with a different amount")
	// ErrHoldExpired: the reservation passed its hold deadline; it can no longer be
	// confirmed (Sweep restores it, Restore may be called).
	ErrHoldExpired = errcode.New(errcode.Conflict, "coupon_hold_expired", "coupon: reservation passed its hold deadline", hold.ErrVoided)
)

// ValidationError says which input was rejected and why. Err is ErrInvalidTemplate, or nil
// (ErrInvalidArgument).
type ValidationError = errcode.InvalidError

func invalidArg(field, reason string) error { return errcode.Invalid(field, reason) }

func invalidTemplate(field, reason string) error {
	return &ValidationError{Err: ErrInvalidTemplate, Field: field, Reason: reason}
}

// IssueError is an issuance rejection. Err is ErrNotStarted, ErrEnded, ErrSoldOut,
// ErrLimitReached, ErrRequestConflict or ErrOtherIssuer; the other fields say what was
// asked and what limit, date or issuer refused it (zero when not relevant).
type IssueError struct {
	Err        error
	TemplateID string
	UserID     string
	RequestID  string
	// Total is the template's total quantity (ErrSoldOut).
	Total int64
	// Limit is the template's per-user limit (ErrLimitReached).
	Limit int
	// At is the window boundary that refused the request (ErrNotStarted, ErrEnded).
	At time.Time
	// Issuer is the name of the issuer that issues the template (ErrOtherIssuer).
	Issuer string
}

func (e *IssueError) Error() string {
	s := fmt.Sprintf("%v (template %q, user %q, request %q", e.Err, e.TemplateID, e.UserID, e.RequestID)
	switch {
	case e.Total > 0:
		s += fmt.Sprintf(", total %d", e.Total)
	case e.Limit > 0:
		s += fmt.Sprintf(", limit %d", e.Limit)
	case !e.At.IsZero():
		s += ", at " + e.At.Format(time.RFC3339)
	case e.Err == ErrOtherIssuer:
		s += fmt.Sprintf(", issuer %q", e.Issuer)
	}
	return s + ")"
}

// Unwrap returns Err, the sentinel that says why the issue was refused.
func (e *IssueError) Unwrap() error { return e.Err }

// RedeemError is a redemption rejection. Err is one of ErrCouponNotFound, ErrNotOwner,
// ErrNotAvailable, ErrNotYetUsable, ErrExpired, ErrBelowMinimum, ErrRedemptionNotFound,
// ErrRedemptionClosed, ErrRedemptionConflict or ErrHoldExpired.
type RedeemError struct {
	Err      error
	CouponID string
	OrderID  string
	// State is the coupon's state (ErrNotAvailable) or the redemption's state
	// (ErrRedemptionClosed, ErrHoldExpired).
	State string
	// MinOrderAmount and OrderAmount explain ErrBelowMinimum and ErrRedemptionConflict.
	MinOrderAmount int64
	OrderAmount    int64
	// At is the date that refused the coupon (ErrNotYetUsable, ErrExpired, ErrHoldExpired).
	At time.Time
}

func (e *RedeemError) Error() string {
	s := fmt.Sprintf("%v (coupon %q, order %q", e.Err, e.CouponID, e.OrderID)
	if e.State != "" {
		s += ", state " + e.State
	}
	if e.MinOrderAmount > 0 || e.OrderAmount > 0 {
		s += fmt.Sprintf(", minimum %d, order amount %d", e.MinOrderAmount, e.OrderAmount)
	}
	if !e.At.IsZero() {
		s += ", at " + e.At.Format(time.RFC3339)
	}
	return s + ")"
}

// Unwrap returns Err, the sentinel that says why the redemption was refused.
func (e *RedeemError) Unwrap() error { return e.Err }

// Internal signals between the Service's steps; never returned to callers.
var (
	errDuplicate = errors.New("coupon: duplicate key")
	errReplay    = errors.New("coupon: request already served")
)

// fail returns err as callers should see it: domain errors (those with a code, and every
// *RedeemError) and context errors as they are, any other (storage) error wrapped with
// what was being done, and matching errcode.ErrUnavailable when it says the database
// could not be reached or did not answer (depfail). ErrNotLoaded, which is for
// backends, is not passed on: it only gets here when the state vanished again right after
// it was loaded.
func fail(what string, err error) error {
	var redeem *RedeemError
	switch {
	case errors.Is(err, ErrNotLoaded):
		return fmt.Errorf("coupon: %s: the issuer's state vanished again after it was loaded", what)
	case errcode.CodeOf(err) != errcode.Unknown, errors.As(err, &redeem):
		return err
	}
	return fmt.Errorf("coupon: %s: %w", what, depfail.Wrap("database", err))
}
