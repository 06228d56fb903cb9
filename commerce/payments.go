package commerce

import (
	"context"
	"errors"
	"fmt"

	"github.com/commercekit/commercekit/payment"
)

// getOrSubmit is how checkout reaches the PG about a refund (charge does the same for a
// payment, which is recorded before it is submitted): a client's request (ask) submits it,
// idempotent on its ID, so the PG answers for the first submission whatever happened since;
// recovery (not ask) reads what the payment package recorded and submits only what it never
// recorded (notFound), leaving an unsettled answer to the payment reconciler.
func getOrSubmit[T any](ask bool, get func() (T, error), notFound error, submit func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	if !ask {
		v, err = get()
	}
	if ask || errors.Is(err, notFound) {
		v, err = submit()
	}
	return v, err
}

// charge learns the outcome of the payment req: a client's request (ask) submits it to the PG
// (payment.Service.Submit, idempotent on its ID); recovery (not ask) reads what the payment
// package recorded, leaving an unsettled payment to the payment reconciler. A payment never
// recorded (an order or top-up claimed by an earlier version, which recorded it after the
// claim's commit) is recorded and submitted at once (payment.Service.Pay).
func (s *Service) charge(ctx context.Context, req payment.PayRequest, ask bool) (payment.Payment, error) {
	return s.chargeBy(ctx, req, ask, s.pay.Submit)
}

// chargeBy is charge with submit (payment.Service.Submit, or Attempt) for a client's request.
func (s *Service) chargeBy(ctx context.Context, req payment.PayRequest, ask bool,
	submit func(context.Context, payment.PayRequest) (payment.Payment, error)) (payment.Payment, error) {
	get := func() (payment.Payment, error) { return s.pay.Get(ctx, req.PaymentID) }
	if ask {
		get = func() (payment.Payment, error) { return submit(ctx, req) }
	}
	// Never "ask" getOrSubmit: get itself submits for a client; Pay is only for the unrecorded.
	return getOrSubmit(false, get, payment.ErrPaymentNotFound,
		func() (payment.Payment, error) { return s.pay.Pay(ctx, req) })
}

// pending reports whether err (of a payment or refund whose state is not final) means the
// PG has not answered yet: PAYING or refunding until the reconciler settles it.
func pending(err error) bool {
	return err == nil || errors.Is(err, payment.ErrOutcomeUnknown) || errors.Is(err, payment.ErrGatewayUnavailable)
}

// refund gets or submits the refund id of the order's payment (see getOrSubmit: the whole
// payment, less a cancellation's reward shortfall, see orderRow.refunds) and
// reports whether it succeeded; false with a nil error means it is still with the PG. A
// rejected refund is an error wrapping payment.ErrRefundRejected. When part of the payment
// was refunded by other means, it refunds what the order still owes (see refundRest).
func (s *Service) refund(ctx context.Context, r *orderRow, id, reason string, ask bool) (bool, error) {
	_, owed := r.refunds()
	rf, err := getOrSubmit(ask,
		func() (payment.Refund, error) { return s.pay.GetRefund(ctx, id) }, payment.ErrRefundNotFound,
		func() (payment.Refund, error) {
			return s.pay.Refund(ctx, payment.RefundRequest{RefundID: id, PaymentID: r.PaymentID, Amount: owed, Reason: reason})
		})
	if errors.Is(err, payment.ErrRefundExceedsAmount) || errors.Is(err, payment.ErrRefundIDReused) {
		var nothing bool
		if rf, nothing, err = s.refundRest(ctx, r, id, reason, owed, err); nothing {
			s.cfg.log.Warn("commerce: payment was refunded by other means", "order", r.ID, "refund", id)
			return true, nil
		}
	}
	switch {
	case rf.State == payment.RefundSucceeded:
		return true, nil
	case errors.Is(err, payment.ErrRefundRejected) || rf.State == payment.RefundFailed:
		return false, fmt.Errorf("commerce: refund %s of order %s: %w", id, r.ID, payment.ErrRefundRejected)
	case errors.Is(err, payment.ErrNotRefundable) || errors.Is(err, payment.ErrRefundExceedsAmount):
		// Refunded by other means (by hand at the PG, say): done if nothing is left.
		p, perr := s.pay.Get(ctx, r.PaymentID)
		switch {
		case perr != nil:
			// Not knowing why is no refusal: the read's failure is the answer.
			return false, fmt.Errorf("commerce: refund %s of order %s: %w", id, r.ID, perr)
		case p.State == payment.StateRefunded:
			s.cfg.log.Warn("commerce: payment was refunded by other means", "order", r.ID, "refund", id)
			return true, nil
		case p.State == payment.StateReview:
			// A person settles the money with the PG: no refund is made meanwhile.
			return false, fmt.Errorf("commerce: refund %s of order %s: %w: %w", id, r.ID, payment.ErrRefundRejected, payment.ErrUnderReview)
		}
	case pending(err) || errors.Is(err, payment.ErrRefundInProgress):
		s.cfg.log.Info("commerce: refund not settled yet", "order", r.ID, "refund", id, "err", err)
		return false, nil
	}
	return false, fmt.Errorf("commerce: refund %s of order %s: %w", id, r.ID, err)
}

// refundRest makes the refund id of the order r, which owes owed, when part of its payment
// was refunded by other means (an operator's refund: the payment PARTIALLY_REFUNDED, and
// owed more than is left of it, cause): what it owes less what the payment has refunded,
// so that the buyer gets back what the order owes, once. A replay finds the refund recorded
// with that amount and sends it again as it is. nothing reports that the other refunds gave
// back all the order owes, so no refund is due. Any other case returns cause as it is: the
// payment refunded in full, or under review (see refund); another refund of it still with
// the PG is waited for (an empty refund, no error).
func (s *Service) refundRest(ctx context.Context, r *orderRow, id, reason string, owed int64, cause error) (payment.Refund, bool, error) {
	amount := owed
	if rf, err := s.pay.GetRefund(ctx, id); err == nil {
		amount = rf.Amount // recorded by an earlier call: the same again
	} else if !errors.Is(err, payment.ErrRefundNotFound) {
		return payment.Refund{}, false, err
	} else {
		p, err := s.pay.Get(ctx, r.PaymentID)
		switch {
		case err != nil:
			return payment.Refund{}, false, err
		case p.State != payment.StatePartiallyRefunded:
			return payment.Refund{}, false, cause
		case p.RefundPending > 0:
			return payment.Refund{}, false, nil // settle that one first
		}
		if amount = owed - p.Refunded; amount <= 0 {
			return payment.Refund{}, true, nil
		}
	}
	rf, err := s.pay.Refund(ctx, payment.RefundRequest{RefundID: id, PaymentID: r.PaymentID, Amount: amount, Reason: reason})
	return rf, false, err
}
