package commerce

import (
	"context"
	"errors"
	"fmt"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/payment"
)

// FailurePaymentReview is the FailureCode of an order or top-up whose payment is under review
// (payment.StateReview): the PG's own answer contradicted the payment's record, e.g. a
// webhook announced an approval the PG declined. Nothing is completed on such a payment: the
// order fails and gives its stock, coupon and points back, the top-up credits nothing, and a
// person settles the money with the PG (Audit reports the payment until then).
const FailurePaymentReview = "PAYMENT_REVIEW"

// failUnderReview compensates a PAYING order whose payment is under review into
// PAYMENT_FAILED.
func (s *Service) failUnderReview(ctx context.Context, r *orderRow) error {
	s.cfg.log.Error("commerce: payment under review: the order fails instead of being paid",
		"order", r.ID, "payment", r.PaymentID)
	return s.closeUnpaid(ctx, r, StatusPaymentFailed, EventPaymentFailed, OutcomeFailed, FailurePaymentReview)
}

// ErrPaymentInUse: ResolvePaymentReview was asked to give back a payment that an order or
// top-up is (or may yet be) fulfilled by; a person decides. Nothing changed.
var ErrPaymentInUse = errcode.New(errcode.Conflict, "payment_in_use",
	"commerce: the payment's order or top-up is not failed under review: a person decides")

// ResolvePaymentReview gives back whatever the PG holds of a payment in REVIEW that no order
// or top-up is fulfilled by (see payment.Service.ResolveReview: the PG's own record is asked
// again and taken; a charge it holds is refunded), and returns the payment's record as it is
// then. Such a payment is that of a failed or expired order (FailurePaymentReview, or a
// decline the PG overturned), of a failed top-up, or an order's earlier attempt (the order
// pays by a later payment). A payment an order or top-up is, or may yet be, fulfilled by
// (paying, paid, cancelling or cancelled after paying, completed), or one of nothing this
// Service knows, is ErrPaymentInUse and changes nothing: a person decides. An operator's
// call: it takes no Actor; refserver serves it to admins. Idempotent, as ResolveReview is:
// the error of a give-back the PG has not confirmed yet (payment.ErrGatewayUnavailable,
// payment.ErrOutcomeUnknown) leaves it recorded for the Reconciler or the next call.
func (s *Service) ResolvePaymentReview(ctx context.Context, paymentID string) (PaymentRecord, error) {
	p, err := s.pay.Get(ctx, paymentID)
	if err != nil {
		return PaymentRecord{}, fmt.Errorf("commerce: resolving payment %s: %w", paymentID, err)
	}
	if err := s.fulfilsNothing(ctx, p); err != nil {
		return PaymentRecord{}, err
	}
	_, err = s.pay.ResolveReview(ctx, paymentID)
	rec, rerr := s.paymentRecord(ctx, paymentID)
	if err != nil {
		return rec, fmt.Errorf("commerce: resolving payment %s: %w", paymentID, err)
	}
	return rec, rerr
}

// fulfilsNothing returns nil when no order or top-up is, or may yet be, fulfilled by p, else
// ErrPaymentInUse.
func (s *Service) fulfilsNothing(ctx context.Context, p payment.Payment) error {
	admin := Actor{Admin: true}
	var status string
	if o, err := s.GetOrder(ctx, p.OrderID, admin); err == nil {
		if o.PaymentID != p.ID || o.Status != StatusPaying && o.PaidAt.IsZero() {
			return nil
		}
		status = string(o.Status)
	} else if !errors.Is(err, ErrOrderNotFound) {
		return err
	} else if t, err := s.GetTopUp(ctx, p.OrderID, admin); err == nil {
		if t.PaymentID != p.ID || t.Status == TopUpFailed {
			return nil
		}
		status = string(t.Status)
	} else if !errors.Is(err, ErrTopUpNotFound) {
		return err
	} else {
		return fmt.Errorf("%w: payment %s names %s, which this Service does not know", ErrPaymentInUse, p.ID, p.OrderID)
	}
	return fmt.Errorf("%w: payment %s of %s, which is %s", ErrPaymentInUse, p.ID, p.OrderID, status)
}
