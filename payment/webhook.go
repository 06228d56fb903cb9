package payment

import (
	"context"
	"errors"
	"fmt"
)

// EventKind is what a webhook reports.
type EventKind string

// The kinds of webhook events.
const (
	// EventApproved: the PG approved the payment.
	EventApproved EventKind = "payment.approved"
	// EventDeclined: the PG declined the payment.
	EventDeclined EventKind = "payment.declined"
	// EventCanceled: the PG refunded (part of) the payment; CancelID names the refund.
	EventCanceled EventKind = "payment.canceled"
)

// WebhookEvent is a PG's notification, decoded and verified.
type WebhookEvent struct {
	Kind      EventKind
	PaymentID string
	// Amount and Currency are the payment's, checked against the record.
	Amount         int64
	Currency       string
	Reference      string
	DeclineCode    string
	DeclineMessage string
	// CancelID, CancelAmount and CancelReference describe the refund of an EventCanceled.
	CancelID        string
	CancelAmount    int64
	CancelReference string
}

// WebhookVerifier checks a webhook's signature and decodes it. It is specific to a PG (each
// signs and encodes its own way); pgsim.WebhookVerifier is the simulator's. Errors must match
// ErrInvalidWebhook.
type WebhookVerifier interface {
	VerifyWebhook(body []byte, signature string) (WebhookEvent, error)
}

// HandleWebhook verifies a webhook (body and signature as received) with the Service's
// WebhookVerifier, then confirms it with the PG before recording anything: a webhook is a
// notification, never proof. For an approval or a decline it asks the PG for the payment
// (Gateway.Status) and records the PG's own answer, whatever the webhook claimed, unless
// the record already holds what the webhook claims (APPROVED for an approval, DECLINED for
// a decline: the PG's answer to the charge settled it, as for every paid order), when
// there is nothing to confirm and the PG is not asked again; a claim the PG does not
// confirm (a forgery signed with a leaked secret, or a PG not finished yet) records
// nothing of its own, is logged as an ERROR, told to the Observer (a "contradiction"
// Event) and refused with ErrWebhookUnconfirmed. A refund's claim is confirmed by asking
// the PG for the refund still PENDING (see completeRefund): one the PG refuses is recorded
// FAILED, and the webhook refused the same way. What is recorded is recorded exactly once:
// a webhook for a payment already settled the same way (by the response, an earlier
// delivery, or the reconciler) changes nothing and returns nil, so a PG may deliver it any
// number of times, and it may race the reconciler or a client's retry. A PG whose answer
// contradicts the record moves the payment to REVIEW (see State). An approval of a payment
// that was ABANDONED gives the charge back (its void, recorded with the move): the webhook
// fails while the void is not settled, and its redelivery sends the void still pending, so
// a lost answer never leaves the money with the PG until the Reconciler's next pass.
//
// Errors: ErrWebhookNotConfigured; ErrInvalidWebhook (bad signature or body, or an amount
// (or, for a refund, a payment) that does not match the record, which is also logged and
// told to the Observer as a contradiction: reject it, e.g. with HTTP 400);
// ErrWebhookUnconfirmed; ErrPaymentNotFound or ErrRefundNotFound; ErrIllegalTransition
// when a webhook reports a refund recorded as failed, which needs a person (also told to
// the Observer as a contradiction, with what the PG says it refunded); the gateway's
// errors (ErrGatewayUnavailable, ErrOutcomeUnknown) when the PG could not be asked;
// anything else is a storage error worth a redelivery.
func (s *Service) HandleWebhook(ctx context.Context, body []byte, signature string) error {
	if s.verifier == nil {
		return ErrWebhookNotConfigured
	}
	ev, err := s.verifier.VerifyWebhook(body, signature)
	if err != nil {
		if !errors.Is(err, ErrInvalidWebhook) {
			err = fmt.Errorf("%w: %w", ErrInvalidWebhook, err)
		}
		return err
	}
	switch ev.Kind {
	case EventApproved, EventDeclined:
		p, err := s.Get(ctx, ev.PaymentID)
		if err != nil {
			return err
		}
		if p.Amount != ev.Amount || p.Currency != ev.Currency {
			// Signed with our secret, yet not our record: a forgery (the secret leaked) or a
			// PG that disagrees. Refused, and reported like any contradicted claim.
			detail := fmt.Sprintf("a webhook claims %d %s, recorded %d %s", ev.Amount, ev.Currency, p.Amount, p.Currency)
			s.logger.ErrorContext(ctx, "payment: signed webhook contradicts the record; refused",
				"payment", p.ID, "order", p.OrderID, "state", p.State, "detail", detail)
			s.contradicted(p.ID, CauseWebhook, detail)
			return fmt.Errorf("%w: %q: %s", ErrInvalidWebhook, p.ID, detail)
		}
		return s.confirmWebhook(ctx, p, ev)
	case EventCanceled:
		r, err := s.GetRefund(ctx, ev.CancelID)
		if err != nil {
			return err
		}
		if r.PaymentID != ev.PaymentID || r.Amount != ev.CancelAmount {
			// Signed with our secret, yet not our record: refused, and reported like the
			// approval above.
			detail := fmt.Sprintf("a webhook claims refund %q is %d of %q, recorded %d of %q",
				r.ID, ev.CancelAmount, ev.PaymentID, r.Amount, r.PaymentID)
			s.logger.ErrorContext(ctx, "payment: signed refund webhook contradicts the record; refused",
				"refund", r.ID, "payment", r.PaymentID, "detail", detail)
			s.contradicted(r.PaymentID, CauseWebhook, detail)
			return fmt.Errorf("%w: %s", ErrInvalidWebhook, detail)
		}
		switch r.State {
		case RefundPending:
			// Asking the PG is how it confirms the refund (see completeRefund): its answer,
			// not the webhook's, settles the refund.
			if r, err = s.completeRefund(ctx, r, false); errors.Is(err, ErrRefundRejected) {
				return s.refundUnconfirmed(ctx, r)
			}
			return err
		case RefundFailed:
			return s.failedRefundClaimed(ctx, r)
		}
		return nil
	}
	return fmt.Errorf("%w: unknown event kind %q", ErrInvalidWebhook, ev.Kind)
}

// confirmWebhook asks the PG about the payment a verified webhook reports on, records the
// PG's answer, and refuses the webhook if that answer is not the webhook's claim; a claim
// the record already holds is not asked about.
func (s *Service) confirmWebhook(ctx context.Context, p Payment, ev WebhookEvent) error {
	claim, holds := GatewayApproved, StateApproved
	if ev.Kind == EventDeclined {
		claim, holds = GatewayDeclined, StateDeclined
	}
	if p.State == holds { // the PG's own answer settled it so: nothing to confirm
		return s.completeVoid(ctx, p)
	}
	st, err := s.gw.Status(ctx, p.ID)
	switch {
	case errors.Is(err, ErrNotAtGateway):
		return s.unconfirmed(ctx, p, claim, "the gateway has no such payment")
	case err != nil:
		return fmt.Errorf("payment: confirming the webhook about %q with the gateway: %w", p.ID, err)
	}
	p, err = s.recordStatus(ctx, p, st, CauseWebhook)
	if err != nil {
		return err
	}
	if err := s.completeVoid(ctx, p); err != nil {
		return err
	}
	if st.State != claim {
		return s.unconfirmed(ctx, p, claim, "the gateway says "+string(st.State))
	}
	return nil
}

// completeVoid sends the void of p (the refund of all of it that recordVoid records when an
// abandoned payment is approved after all) if p is APPROVED with its void still PENDING: the
// webhook handled again after the move was recorded but the void not sent (the answer of
// its COMMIT lost, say) gives the money back itself instead of leaving it to the
// Reconciler. A void not settled now (the database or the PG unavailable, the outcome
// unknown) is the webhook's error, so that the PG delivers it again; one the PG refused is
// for a person (CrossCheck reports the payment) and no failure of the webhook.
func (s *Service) completeVoid(ctx context.Context, p Payment) error {
	if p.State != StateApproved || p.RefundPending == 0 { // no refund in flight: no void to send (every paid order's webhook)
		return nil
	}
	r, err := s.GetRefund(ctx, voidRefundID(p.ID))
	switch {
	case errors.Is(err, ErrRefundNotFound):
		return nil
	case err != nil:
		return err
	case r.State != RefundPending:
		return nil
	}
	if _, err := s.sendRecorded(ctx, p, r); err != nil && !errors.Is(err, ErrRefundRejected) {
		return fmt.Errorf("payment: giving back the charge of abandoned payment %q: %w", p.ID, err)
	}
	return nil
}

// failedRefundClaimed reports a verified webhook claiming that r, recorded as FAILED (the PG
// refused it), succeeded: the PG contradicts its own answer, or the webhook is forged with a
// leaked secret. Either way a person must look, so it is reported as a contradiction with
// what the PG, asked directly, says it refunded of the payment. Nothing is recorded.
func (s *Service) failedRefundClaimed(ctx context.Context, r Refund) error {
	p, err := s.Get(ctx, r.PaymentID)
	if err != nil {
		return err
	}
	st, err := s.gw.Status(ctx, r.PaymentID)
	if err != nil {
		return fmt.Errorf("payment: checking the webhook about refund %q with the gateway: %w", r.ID, err)
	}
	detail := fmt.Sprintf("a webhook claims refund %q of %d succeeded, recorded FAILED; the gateway has refunded %d of the payment, %d recorded",
		r.ID, r.Amount, st.Canceled, p.Refunded)
	s.logger.ErrorContext(ctx, "payment: a webhook contradicts a refund recorded as failed", "refund", r.ID,
		"payment", p.ID, "order", p.OrderID, "detail", detail)
	s.contradicted(p.ID, CauseWebhook, detail)
	return fmt.Errorf("%w: refund %q is FAILED here: %s", ErrIllegalTransition, r.ID, detail)
}

// refundUnconfirmed reports a webhook claiming that r succeeded, when the PG, asked to
// confirm it, refused r (recorded FAILED as it is given): the PG does not confirm the claim,
// as unconfirmed reports of a payment's.
func (s *Service) refundUnconfirmed(ctx context.Context, r Refund) error {
	detail := fmt.Sprintf("a webhook claims refund %q of %d succeeded, the gateway refused it: %s: %s",
		r.ID, r.Amount, r.FailureCode, r.FailureMessage)
	s.logger.ErrorContext(ctx, "payment: refund webhook not confirmed by the gateway; its refusal recorded",
		"refund", r.ID, "payment", r.PaymentID, "detail", detail)
	s.contradicted(r.PaymentID, CauseWebhook, detail)
	return fmt.Errorf("%w: refund %q: %s", ErrWebhookUnconfirmed, r.ID, detail)
}

// unconfirmed reports a webhook whose claim the PG does not confirm.
func (s *Service) unconfirmed(ctx context.Context, p Payment, claim GatewayState, why string) error {
	detail := fmt.Sprintf("a webhook claims %s, %s", claim, why)
	s.logger.ErrorContext(ctx, "payment: webhook not confirmed by the gateway; nothing recorded from it",
		"payment", p.ID, "order", p.OrderID, "state", p.State, "detail", detail)
	s.contradicted(p.ID, CauseWebhook, detail)
	return fmt.Errorf("%w: %q: %s", ErrWebhookUnconfirmed, p.ID, detail)
}

// recordStatus records what the PG says of p (st, from Gateway.Status) with cause: its
// approval or its decline, nothing while it is pending, and REVIEW when it contradicts the
// record (another amount or currency, or another outcome than recorded).
func (s *Service) recordStatus(ctx context.Context, p Payment, st GatewayPayment, cause Cause) (Payment, error) {
	if st.Amount != p.Amount || st.Currency != p.Currency {
		return s.review(ctx, p, cause, fmt.Sprintf("recorded %d %s, the gateway has %d %s", p.Amount, p.Currency, st.Amount, st.Currency))
	}
	switch st.State {
	case GatewayApproved:
		return s.settle(ctx, p, StateApproved, change{cause: cause, reference: truncate(st.Reference, 128)})
	case GatewayDeclined:
		return s.settle(ctx, p, StateDeclined, change{
			cause: cause, detail: truncate(st.DeclineCode, 255),
			declineCode: truncate(st.DeclineCode, 64), declineMessage: truncate(st.DeclineMessage, 255),
		})
	}
	return p, nil
}
