package commerce

import (
	"context"
	"fmt"

	"github.com/commercekit/commercekit/payment"
)

// PaymentRecord is the payment of an order or a top-up as the payment package recorded it:
// the payment, the history of its state (oldest first, starting with its creation) and its
// refunds (oldest first). It is the source documents' payment history (결제 내역 조회).
type PaymentRecord struct {
	Payment     payment.Payment
	Transitions []payment.Transition
	Refunds     []payment.Refund
}

// OrderPayment returns the payment of an order of by.UserID (any order for an admin;
// another user's order is ErrOrderNotFound). An order with no payment through the PG —
// not paid yet, or paid by points alone — is payment.ErrPaymentNotFound.
func (s *Service) OrderPayment(ctx context.Context, orderID string, by Actor) (PaymentRecord, error) {
	o, err := s.GetOrder(ctx, orderID, by)
	if err != nil {
		return PaymentRecord{}, err
	}
	return s.paymentRecord(ctx, o.PaymentID)
}

// TopUpPayment returns the payment of a top-up of by.UserID (any top-up for an admin;
// another user's top-up is ErrTopUpNotFound).
func (s *Service) TopUpPayment(ctx context.Context, topUpID string, by Actor) (PaymentRecord, error) {
	t, err := s.GetTopUp(ctx, topUpID, by)
	if err != nil {
		return PaymentRecord{}, err
	}
	return s.paymentRecord(ctx, t.PaymentID)
}

// paymentRecord reads payment id, its transitions and its refunds.
func (s *Service) paymentRecord(ctx context.Context, id string) (PaymentRecord, error) {
	if id == "" {
		return PaymentRecord{}, fmt.Errorf("%w: nothing went through the PG", payment.ErrPaymentNotFound)
	}
	var rec PaymentRecord
	var err error
	if rec.Payment, err = s.pay.Get(ctx, id); err != nil {
		return PaymentRecord{}, err
	}
	if rec.Transitions, err = s.pay.Transitions(ctx, id); err != nil {
		return PaymentRecord{}, err
	}
	if rec.Refunds, err = s.pay.Refunds(ctx, id); err != nil {
		return PaymentRecord{}, err
	}
	return rec, nil
}
