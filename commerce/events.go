package commerce

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/outbox"
)

// EventSchemaVersion is the version of the JSON payloads of commerce's events, carried in
// every payload as "schemaVersion". Adding an optional field keeps the version; renaming,
// removing or changing the meaning of a field raises it, and consumers reject versions they
// do not know (see the package documentation for the table of events).
const EventSchemaVersion = 1

// The types of the events commerce writes to the outbox (the outbox Event's Type). An
// order's events have the order ID as their key and the ID "<order>-<type>", a top-up's the
// top-up ID, a coupon's the coupon ID: each is written at most once.
const (
	EventOrderCreated     = "order-created"
	EventPaymentCompleted = "payment-completed"
	EventPaymentFailed    = "payment-failed"
	EventOrderCancelled   = "order-cancelled"
	EventOrderExpired     = "order-expired"
	EventPointsCharged    = "points-charged"
	EventCouponIssued     = "coupon-issued"
)

// The default topics, named after the source documents' Kafka topics (payment-completed,
// coupon-issued); an order's other events share DefaultTopic.
const (
	TopicPaymentCompleted = "payment-completed"
	TopicCouponIssued     = "coupon-issued"
	TopicPointsCharged    = "points-charged"
)

// EventTypes lists every event type commerce writes.
var EventTypes = []string{
	EventOrderCreated, EventPaymentCompleted, EventPaymentFailed, EventOrderCancelled,
	EventOrderExpired, EventPointsCharged, EventCouponIssued,
}

// Topics maps each event type to the topic it is written to.
type Topics map[string]string

// DefaultTopics returns the default mapping: payment-completed, coupon-issued and
// points-charged each on a topic of that name, the other order events (created, payment
// failed, cancelled, expired) on DefaultTopic.
func DefaultTopics() Topics {
	return Topics{
		EventOrderCreated:     DefaultTopic,
		EventPaymentFailed:    DefaultTopic,
		EventOrderCancelled:   DefaultTopic,
		EventOrderExpired:     DefaultTopic,
		EventPaymentCompleted: TopicPaymentCompleted,
		EventCouponIssued:     TopicCouponIssued,
		EventPointsCharged:    TopicPointsCharged,
	}
}

// Names returns the distinct topics of the mapping, sorted.
func (t Topics) Names() []string {
	return slices.Compact(slices.Sorted(maps.Values(t)))
}

// Of returns the topic of the event type (and false for a type not in the mapping).
func (t Topics) Of(eventType string) (string, bool) {
	topic, ok := t[eventType]
	return topic, ok
}

// check reports the first type the mapping lacks, does not know, or maps to "".
func (t Topics) check() error {
	for _, typ := range EventTypes {
		if t[typ] == "" {
			return fmt.Errorf("%w: no topic for event type %s", ErrInvalidConfig, typ)
		}
	}
	for typ := range t {
		if !slices.Contains(EventTypes, typ) {
			return fmt.Errorf("%w: unknown event type %q in the topic mapping", ErrInvalidConfig, typ)
		}
	}
	return nil
}

// Topics returns the Service's mapping of event types to topics (a copy): subscribe
// consumers to its Names.
func (s *Service) Topics() Topics { return maps.Clone(s.cfg.topics) }

// EventLine is one line of an order in an event: Qty units of a product at UnitPrice,
// Amount = Qty × UnitPrice.
type EventLine struct {
	ProductID string `json:"productId"`
	Qty       int64  `json:"qty"`
	UnitPrice int64  `json:"unitPrice"`
	Amount    int64  `json:"amount"`
}

// OrderEvent is the payload of an order's events (JSON): the order as the transaction that
// wrote the event leaves it. PaidAt is set once the order was paid, so an order-cancelled
// event with PaidAt is the refund of a sale; it then says what was refunded: RefundPoints
// and RefundAmount (present, even when zero, on every such event; absent on the others),
// which are Points and AmountDue less RewardShortfall, the part of the reward the user
// had spent (see Cancel). Events written before these fields existed refunded everything.
// RewardWithheld, on a payment-completed event only, is the reward the ledger refused
// because the user's points were at ledger.MaxBalance: the order was paid without it
// (Reward 0), not at a rate of 0.
type OrderEvent struct {
	SchemaVersion int         `json:"schemaVersion"`
	OrderID       string      `json:"orderId"`
	UserID        string      `json:"userId"`
	Status        Status      `json:"status"`
	Lines         []EventLine `json:"lines"`
	CouponID      string      `json:"couponId,omitempty"`
	Subtotal      int64       `json:"subtotal"`
	Discount      int64       `json:"discount"`
	Points        int64       `json:"points"`
	AmountDue     int64       `json:"amountDue"`
	Reward        int64       `json:"reward,omitempty"`
	Currency      string      `json:"currency"`
	PayMethod     string      `json:"payMethod,omitempty"`
	PaymentID     string      `json:"paymentId,omitempty"`
	FailureCode   string      `json:"failureCode,omitempty"`
	PaidAt        *time.Time  `json:"paidAt,omitempty"`
	At            time.Time   `json:"at"`

	// RewardShortfall, RefundPoints and RefundAmount: see the type's doc.
	RewardShortfall int64  `json:"rewardShortfall,omitempty"`
	RefundPoints    *int64 `json:"refundPoints,omitempty"`
	RefundAmount    *int64 `json:"refundAmount,omitempty"`

	// RewardWithheld: see the type's doc.
	RewardWithheld int64 `json:"rewardWithheld,omitempty"`
}

// Paid returns what the order was paid with: points plus the amount due (the subtotal less
// the discount).
func (e OrderEvent) Paid() int64 { return e.Points + e.AmountDue }

// TopUpEvent is the payload of a top-up's event (JSON).
type TopUpEvent struct {
	SchemaVersion int       `json:"schemaVersion"`
	TopUpID       string    `json:"topUpId"`
	UserID        string    `json:"userId"`
	Amount        int64     `json:"amount"`
	PaymentID     string    `json:"paymentId"`
	At            time.Time `json:"at"`
}

// CouponIssuedEvent is the payload of a coupon's coupon-issued event (JSON).
type CouponIssuedEvent struct {
	SchemaVersion int        `json:"schemaVersion"`
	CouponID      string     `json:"couponId"`
	TemplateID    string     `json:"templateId"`
	UserID        string     `json:"userId"`
	ExpiresAt     *time.Time `json:"expiresAt,omitempty"`
	At            time.Time  `json:"at"`
}

// orderEvent adds the order's event of type typ to the outbox through tx; r must hold the
// order as the transaction leaves it.
func (s *Service) orderEvent(ctx context.Context, tx bun.Tx, r *orderRow, typ string, now time.Time) error {
	o := r.order()
	ev := OrderEvent{
		SchemaVersion: EventSchemaVersion,
		OrderID:       o.ID, UserID: o.UserID, Status: o.Status, Lines: make([]EventLine, len(o.Lines)), CouponID: o.CouponID,
		Subtotal: o.Subtotal, Discount: o.Discount, Points: o.Points, AmountDue: o.AmountDue, Reward: o.Reward,
		Currency: Currency, PayMethod: string(o.PayMethod), PaymentID: o.PaymentID, FailureCode: o.FailureCode,
		At: now,
	}
	for i, l := range o.Lines {
		ev.Lines[i] = EventLine(l)
	}
	if r.PaidAt != 0 {
		paid := fromMicros(r.PaidAt)
		ev.PaidAt = &paid
	}
	if typ == EventPaymentCompleted {
		ev.RewardWithheld = r.RewardWithheld
	}
	if r.PaidAt != 0 && typ == EventOrderCancelled {
		ev.RewardShortfall, ev.RefundPoints, ev.RefundAmount = o.RewardShortfall, &o.RefundPoints, &o.RefundAmount
	}
	return s.addEvent(ctx, tx, r.ID, typ, ev)
}

// couponEvent adds a coupon's coupon-issued event through tx, the transaction that writes
// the coupon.
func (s *Service) couponEvent(ctx context.Context, tx bun.Tx, c coupon.Coupon) error {
	ev := CouponIssuedEvent{
		SchemaVersion: EventSchemaVersion, CouponID: c.ID, TemplateID: c.TemplateID, UserID: c.UserID,
		At: c.IssuedAt.UTC(),
	}
	if !c.ExpiresAt.IsZero() {
		exp := c.ExpiresAt.UTC()
		ev.ExpiresAt = &exp
	}
	return s.addEvent(ctx, tx, c.ID, EventCouponIssued, ev)
}

func (s *Service) addEvent(ctx context.Context, tx bun.Tx, key, typ string, payload any) error {
	body, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("commerce: encode %s event: %w", typ, err)
	}
	_, err = s.out.Add(ctx, tx, outbox.Event{
		ID: EventID(key, typ), Topic: s.cfg.topics[typ], Key: key, Type: typ, Payload: body,
	})
	if err != nil {
		return fmt.Errorf("commerce: write %s event of %s: %w", typ, key, err)
	}
	return nil
}
