package commerce

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/outbox"
)

// The types of the events commerce writes to the outbox. Every event of an order has the
// order ID as its key (one stream per order, in order) and the ID "<order>-<type>", so it
// is written at most once.
const (
	EventOrderCreated     = "order-created"
	EventPaymentCompleted = "payment-completed"
	EventPaymentFailed    = "payment-failed"
	EventOrderCancelled   = "order-cancelled"
	EventOrderExpired     = "order-expired"
	EventPointsCharged    = "points-charged"
)

// OrderEvent is the payload of an order's events (JSON).
type OrderEvent struct {
	OrderID     string      `json:"orderId"`
	UserID      string      `json:"userId"`
	Status      Status      `json:"status"`
	Lines       []OrderLine `json:"lines"`
	CouponID    string      `json:"couponId,omitempty"`
	Subtotal    int64       `json:"subtotal"`
	Discount    int64       `json:"discount"`
	Points      int64       `json:"points"`
	AmountDue   int64       `json:"amountDue"`
	Reward      int64       `json:"reward,omitempty"`
	Currency    string      `json:"currency"`
	PayMethod   string      `json:"payMethod,omitempty"`
	PaymentID   string      `json:"paymentId,omitempty"`
	FailureCode string      `json:"failureCode,omitempty"`
	At          time.Time   `json:"at"`
}

// TopUpEvent is the payload of a top-up's event (JSON).
type TopUpEvent struct {
	TopUpID   string    `json:"topUpId"`
	UserID    string    `json:"userId"`
	Amount    int64     `json:"amount"`
	PaymentID string    `json:"paymentId"`
	At        time.Time `json:"at"`
}

// orderEvent adds the order's event of type typ to the outbox through tx; r must hold the
// order as the transaction leaves it.
func (s *Service) orderEvent(ctx context.Context, tx bun.Tx, r *orderRow, typ string, now time.Time) error {
	o := r.order()
	return s.addEvent(ctx, tx, r.ID, typ, OrderEvent{
		OrderID: o.ID, UserID: o.UserID, Status: o.Status, Lines: o.Lines, CouponID: o.CouponID,
		Subtotal: o.Subtotal, Discount: o.Discount, Points: o.Points, AmountDue: o.AmountDue, Reward: o.Reward,
		Currency: Currency, PayMethod: string(o.PayMethod), PaymentID: o.PaymentID, FailureCode: o.FailureCode,
		At: now,
	})
}

func (s *Service) addEvent(ctx context.Context, tx bun.Tx, key, typ string, payload any) error {
	body, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("commerce: encode %s event: %w", typ, err)
	}
	_, err = s.out.Add(ctx, tx, outbox.Event{
		ID: eventID(key, typ), Topic: s.cfg.topic, Key: key, Type: typ, Payload: body,
	})
	if err != nil {
		return fmt.Errorf("commerce: write %s event of %s: %w", typ, key, err)
	}
	return nil
}
