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
// WebhookVerifier and records what it reports, exactly once: a webhook for a payment already
// settled the same way (by the response, an earlier delivery, or the reconciler) changes
// nothing and returns nil, so a PG may deliver it any number of times, and it may race
// the reconciler or a client's retry.
//
// Errors: ErrWebhookNotConfigured; ErrInvalidWebhook (bad signature or body, or an amount that
// does not match the record: reject it, e.g. with HTTP 400); ErrPaymentNotFound or
// ErrRefundNotFound; ErrIllegalTransition when the PG contradicts the record (approved when
// DECLINED), which needs a person; anything else is a storage error worth a redelivery.
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
			return fmt.Errorf("%w: %q is %d %s at the gateway but %d %s here", ErrInvalidWebhook,
				p.ID, ev.Amount, ev.Currency, p.Amount, p.Currency)
		}
		if ev.Kind == EventApproved {
			_, err = s.settle(ctx, p, StateApproved, change{cause: CauseWebhook, reference: truncate(ev.Reference, 128)})
		} else {
			_, err = s.settle(ctx, p, StateDeclined, change{
				cause: CauseWebhook, detail: truncate(ev.DeclineCode, 255),
				declineCode: truncate(ev.DeclineCode, 64), declineMessage: truncate(ev.DeclineMessage, 255),
			})
		}
		return err
	case EventCanceled:
		r, err := s.GetRefund(ctx, ev.CancelID)
		if err != nil {
			return err
		}
		if r.PaymentID != ev.PaymentID || r.Amount != ev.CancelAmount {
			return fmt.Errorf("%w: refund %q is %d of %q at the gateway but %d of %q here", ErrInvalidWebhook,
				r.ID, ev.CancelAmount, ev.PaymentID, r.Amount, r.PaymentID)
		}
		switch r.State {
		case RefundPending:
			_, err = s.settleRefund(ctx, r, RefundSucceeded, ev.CancelReference, nil)
			return err
		case RefundFailed:
			s.logger.ErrorContext(ctx, "payment: the gateway reports a refund recorded as failed", "refund", r.ID, "payment", r.PaymentID)
			return fmt.Errorf("%w: refund %q is FAILED here but succeeded at the gateway", ErrIllegalTransition, r.ID)
		}
		return nil
	}
	return fmt.Errorf("%w: unknown event kind %q", ErrInvalidWebhook, ev.Kind)
}
