package payment

import (
	"errors"
	"fmt"

	"github.com/commercekit/commercekit/errcode"
)

// Sentinel errors, for errors.Is; errcode.CodeOf and errcode.ReasonOf read their code and
// reason. The typed errors below carry detail and match these.
var (
	// ErrInvalidRequest: a request failed validation and changed nothing (see
	// *ValidationError). It is errcode.ErrInvalidArgument.
	ErrInvalidRequest = errcode.ErrInvalidArgument
	// ErrPaymentNotFound: no payment has the ID.
	ErrPaymentNotFound = errcode.New(errcode.NotFound, "payment_not_found", "payment: payment not found")
	// ErrPaymentIDReused: the payment ID is already used by a payment with other parameters.
	// It matches errcode.ErrKeyReused.
	ErrPaymentIDReused = errcode.Derive(errcode.ErrKeyReused, "payment: payment ID reused with different parameters")
	// ErrIllegalTransition: the state machine does not allow the move (see *TransitionError).
	ErrIllegalTransition = errcode.New(errcode.Conflict, "invalid_payment_state", "payment: illegal state transition")

	// ErrDeclined: the PG answered no. It is final and never retried (see *DeclineError).
	ErrDeclined = errcode.New(errcode.FailedPrecondition, "payment_declined", "payment: declined")
	// ErrGatewayUnavailable: the PG was not reached or refused the call before processing it
	// (circuit breaker open, bulkhead full, connection refused, 503). Nothing was charged; the
	// payment stays REQUESTED and can be retried with the same payment ID (or, from
	// Attempt, is ABANDONED: ErrAbandoned). It matches errcode.ErrUnavailable.
	ErrGatewayUnavailable = errcode.New(errcode.DependencyUnavailable, "payment_gateway_unavailable", "payment: gateway unavailable", errcode.ErrUnavailable)
	// ErrAbandoned: the payment was given up (ABANDONED) because the PG was not reached
	// (Service.Attempt). Nothing was charged and the payment ID is never sent again: pay
	// with a new one. It matches ErrGatewayUnavailable and errcode.ErrUnavailable.
	ErrAbandoned = errcode.New(errcode.DependencyUnavailable, "payment_abandoned", "payment: abandoned: the gateway was not reached", ErrGatewayUnavailable)
	// ErrOutcomeUnknown: the call may have reached the PG but no answer came back (timeout, lost
	// response, 5xx). The payment is UNKNOWN until a retry, a webhook or the reconciler learns
	// the PG's answer. It matches errcode.ErrUnavailable.
	ErrOutcomeUnknown = errcode.New(errcode.DependencyUnavailable, "payment_outcome_unknown", "payment: gateway outcome unknown", errcode.ErrUnavailable)
	// ErrUnderReview: the payment is REVIEW: the PG's own answer contradicted the record, and a
	// person must decide (Service.ResolveReview gives back what the PG holds of it). Never
	// complete an order on it.
	ErrUnderReview = errors.New("payment: under review: the gateway contradicts the record")
	// ErrUnresolvable: Service.ResolveReview cannot take the PG's record of a payment in REVIEW
	// as it is (another amount or currency, less refunded than the record, a state the
	// payment would enter a second time): a person settles it with the PG first. It matches
	// ErrUnderReview.
	ErrUnresolvable = errcode.New(errcode.Conflict, "payment_review_unresolvable",
		"payment: under review: the gateway's record cannot be taken as it is", ErrUnderReview)
	// ErrNotUnderReview: Service.ResolveReview was asked about a payment that was never in
	// REVIEW; nothing changed.
	ErrNotUnderReview = errcode.New(errcode.Conflict, "payment_not_under_review", "payment: not under review")
	// ErrNotAtGateway: Gateway.Status found no payment with the ID at the PG.
	ErrNotAtGateway = errors.New("payment: payment not known to the gateway")

	// ErrRefundNotFound: no refund has the ID.
	ErrRefundNotFound = errcode.New(errcode.NotFound, "refund_not_found", "payment: refund not found")
	// ErrRefundIDReused: the refund ID is already used by a refund with other parameters.
	// It matches errcode.ErrKeyReused.
	ErrRefundIDReused = errcode.Derive(errcode.ErrKeyReused, "payment: refund ID reused with different parameters")
	// ErrNotRefundable: the payment is not APPROVED or PARTIALLY_REFUNDED.
	ErrNotRefundable = errors.New("payment: payment is not refundable")
	// ErrRefundExceedsAmount: the refund would take the total refunded above the amount paid
	// (see *RefundAmountError).
	ErrRefundExceedsAmount = errors.New("payment: refund exceeds the refundable amount")
	// ErrRefundInProgress: another refund of the same payment is still with the PG. Refunds of
	// one payment are serialised; retry once it has settled.
	ErrRefundInProgress = errcode.New(errcode.Conflict, "refund_in_progress", "payment: another refund of the payment is in progress")
	// ErrRefundRejected: the PG refused the refund (it is FAILED; wraps a *DeclineError).
	ErrRefundRejected = errors.New("payment: refund rejected by the gateway")

	// ErrInvalidWebhook: a webhook failed signature verification, could not be decoded, or does
	// not match the payment it names.
	ErrInvalidWebhook = errcode.New(errcode.InvalidArgument, "invalid_webhook", "payment: invalid webhook")
	// ErrWebhookUnconfirmed: a correctly signed webhook claims an outcome the PG, asked
	// directly (Gateway.Status), does not confirm: a forgery (the secret leaked), or a PG that
	// has not finished. Nothing was recorded from the webhook's word; the PG may redeliver.
	ErrWebhookUnconfirmed = errcode.New(errcode.Conflict, "webhook_unconfirmed", "payment: webhook not confirmed by the gateway")
	// ErrWebhookNotConfigured: HandleWebhook was called on a Service without a WebhookVerifier.
	ErrWebhookNotConfigured = errors.New("payment: no webhook verifier configured")
)

// ValidationError says which field of a request is invalid and why. It matches ErrInvalidRequest.
type ValidationError = errcode.InvalidError

// TransitionError is an illegal move of a payment's state machine. It matches ErrIllegalTransition.
type TransitionError struct {
	PaymentID string
	From, To  State
}

// Error names the payment and the refused move.
func (e *TransitionError) Error() string {
	return fmt.Sprintf("payment: illegal transition of %q from %s to %s", e.PaymentID, e.From, e.To)
}

// Unwrap returns ErrIllegalTransition.
func (e *TransitionError) Unwrap() error { return ErrIllegalTransition }

// DeclineError is a PG's definitive "no" with its reason code. It matches ErrDeclined.
type DeclineError struct {
	Code    string
	Message string
}

// Error gives the PG's code and message.
func (e *DeclineError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("payment: declined: %s", e.Code)
	}
	return fmt.Sprintf("payment: declined: %s: %s", e.Code, e.Message)
}

// Unwrap returns ErrDeclined.
func (e *DeclineError) Unwrap() error { return ErrDeclined }

// RefundAmountError says how much of a payment was still refundable when a refund asked for
// more. It matches ErrRefundExceedsAmount.
type RefundAmountError struct {
	PaymentID  string
	Requested  int64
	Refundable int64
}

// Error gives the amounts.
func (e *RefundAmountError) Error() string {
	return fmt.Sprintf("payment: refund of %d exceeds the %d still refundable on %q", e.Requested, e.Refundable, e.PaymentID)
}

// Unwrap returns ErrRefundExceedsAmount.
func (e *RefundAmountError) Unwrap() error { return ErrRefundExceedsAmount }

// invalid returns a *ValidationError.
func invalid(field, reason string) error { return errcode.Invalid(field, reason) }
