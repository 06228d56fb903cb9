package payment

import (
	"context"
	"errors"
)

// Gateway is a payment gateway (PG). Every call carries the idempotency key the PG
// deduplicates on: ApproveRequest.PaymentID and CancelRequest.CancelID. An implementation must
// send that key to the PG as its idempotency key, so that sending the same request twice has
// the effect of sending it once; the Service, the reconciler and the resilient package all
// rely on it to retry without charging twice.
//
// Errors tell the caller what the PG did:
//   - a *DeclineError (ErrDeclined): the PG answered no; final, never retried;
//   - ErrGatewayUnavailable: the request was not processed (connection refused, 503);
//   - ErrOutcomeUnknown, a context error or any other error: the request may or may not
//     have been processed.
type Gateway interface {
	// Approve charges a payment. Asking again with the same PaymentID returns the first
	// answer and charges nothing more.
	Approve(ctx context.Context, req ApproveRequest) (Approval, error)
	// Cancel refunds all or part of an approved payment. Asking again with the same CancelID
	// returns the first answer and refunds nothing more.
	Cancel(ctx context.Context, req CancelRequest) (Cancellation, error)
	// Status returns what the PG knows of a payment, or ErrNotAtGateway. That must be the
	// PG's own answer that it never saw the payment (never, say, a 404 from a proxy), and
	// the PG must find a payment by its ID long after it pruned the idempotency key: past
	// the key window (WithGatewayKeyWindow) the Service sends a payment again on that answer.
	//
	// It should list the refunds the PG made of the payment, each with the CancelID it was
	// made under, kept as long as the payment (GatewayPayment.Cancels; Stripe keeps it in a
	// refund's metadata): the refunded total alone cannot tell a pending refund the PG made
	// from a refund of the same amount made outside the Service, in the PG's console, and
	// a refund whose completion hangs on that (see Service.Refund) is left PENDING for a
	// person when the PG does not list them.
	Status(ctx context.Context, paymentID string) (GatewayPayment, error)
}

// Readiness is an optional interface of a Gateway that knows, without calling the PG, that a
// call would be refused now: a circuit breaker that is open (resilient.Gateway implements
// it). Service.Ready asks it, so that a caller can answer "the PG is down, retry later"
// before it records or holds anything.
type Readiness interface {
	// Ready returns nil when a call may go through now, else an error matching
	// ErrGatewayUnavailable (and errcode.ErrUnavailable), whose errcode.RetryAfter is how
	// long before a call may go through again, when known.
	Ready() error
}

// ApproveRequest asks the PG to charge a payment.
type ApproveRequest struct {
	// PaymentID is the PG's idempotency key.
	PaymentID string
	OrderID   string
	Amount    int64
	Currency  string
	Method    Method
	Token     string
}

// Approval is the PG's yes.
type Approval struct {
	// Reference is the PG's own ID for the payment.
	Reference string
}

// CancelRequest asks the PG to refund all or part of a payment.
type CancelRequest struct {
	// CancelID (the refund ID) is the PG's idempotency key.
	CancelID  string
	PaymentID string
	Amount    int64
	Reason    string
}

// Cancellation is the PG's acknowledgement of a refund.
type Cancellation struct {
	// Reference is the PG's own ID for the refund.
	Reference string
}

// GatewayState is the state of a payment at the PG.
type GatewayState string

// The states a PG reports.
const (
	// GatewayApproved: charged (refunds, if any, are in GatewayPayment.Canceled).
	GatewayApproved GatewayState = "APPROVED"
	// GatewayDeclined: refused.
	GatewayDeclined GatewayState = "DECLINED"
	// GatewayPending: the PG is still processing the payment.
	GatewayPending GatewayState = "PENDING"
)

// GatewayPayment is what a PG knows of a payment.
type GatewayPayment struct {
	PaymentID      string
	State          GatewayState
	Amount         int64
	Currency       string
	Reference      string
	DeclineCode    string
	DeclineMessage string
	// Canceled is the total refunded at the PG.
	Canceled int64
	// Cancels are the refunds that make up Canceled, when the PG lists them; nil when it
	// does not (a PG that reports only the total). See Gateway.Status.
	Cancels []GatewayCancel
}

// GatewayCancel is a refund the PG made of a payment.
type GatewayCancel struct {
	// CancelID is the ID the refund was made under: CancelRequest.CancelID (the refund ID)
	// for one the Service asked for, anything else (the PG's own ID, say) for one made
	// outside the Service, in the PG's console.
	CancelID string
	Amount   int64
	// Reference is the PG's own ID for the refund.
	Reference string
}

// made returns the refund the PG made under the refund ID id for amount, and whether it
// lists one; listed is false when the PG does not list its refunds.
func (g GatewayPayment) made(id string, amount int64) (c GatewayCancel, found, listed bool) {
	for _, c := range g.Cancels {
		if c.CancelID == id && c.Amount == amount {
			return c, true, true
		}
	}
	return GatewayCancel{}, false, g.Cancels != nil
}

// approveRequest is what the PG is asked for payment p.
func (p Payment) approveRequest() ApproveRequest {
	return ApproveRequest{
		PaymentID: p.ID, OrderID: p.OrderID, Amount: p.Amount, Currency: p.Currency,
		Method: p.Method, Token: p.Token,
	}
}

// outcome is what a gateway call tells about the payment.
type outcome int

const (
	// outcomeNone: the PG did not process the call (ErrGatewayUnavailable).
	outcomeNone outcome = iota
	// outcomeYes: approved (or refunded).
	outcomeYes
	// outcomeNo: a *DeclineError.
	outcomeNo
	// outcomeUnknown: the call may have been processed.
	outcomeUnknown
)

// classify maps a gateway call's error to its outcome. ErrOutcomeUnknown wins over
// ErrGatewayUnavailable: once one attempt may have reached the PG, the outcome is unknown
// whatever later attempts said.
func classify(err error) outcome {
	switch {
	case err == nil:
		return outcomeYes
	case errors.Is(err, ErrDeclined):
		return outcomeNo
	case errors.Is(err, ErrOutcomeUnknown):
		return outcomeUnknown
	case errors.Is(err, ErrGatewayUnavailable):
		return outcomeNone
	default:
		return outcomeUnknown
	}
}

// declineOf returns the *DeclineError in err, which matches ErrDeclined, or makes one from err
// for a Gateway that signals its declines with another type.
func declineOf(err error) *DeclineError {
	if d, ok := errors.AsType[*DeclineError](err); ok {
		return d
	}
	return &DeclineError{Code: "DECLINED", Message: err.Error()}
}
