package commerce

import "context"

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
