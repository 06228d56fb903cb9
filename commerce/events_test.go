package commerce_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/outbox"
)

// TestEventSchemaV1 pins the JSON shape of schema version 1: a change that breaks it must
// raise commerce.EventSchemaVersion (and update this test and the table in doc.go).
func TestEventSchemaV1(t *testing.T) {
	at := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	paid := at.Add(-time.Minute)
	for name, c := range map[string]struct {
		payload any
		want    string
	}{
		"order": {commerce.OrderEvent{
			SchemaVersion: 1, OrderID: "ord_1", UserID: "u1", Status: commerce.StatusCancelled,
			Lines:    []commerce.EventLine{{ProductID: "sku-1", Qty: 2, UnitPrice: 500, Amount: 1000}},
			CouponID: "c1", Subtotal: 1000, Discount: 100, Points: 200, AmountDue: 700, Reward: 7,
			RewardShortfall: 5, RefundPoints: new(int64(195)), RefundAmount: new(int64(700)), Currency: "KRW",
			PayMethod: "CARD", PaymentID: "pay-ord_1", PaidAt: &paid, At: at,
		}, `{"schemaVersion":1,"orderId":"ord_1","userId":"u1","status":"CANCELLED",` +
			`"lines":[{"productId":"sku-1","qty":2,"unitPrice":500,"amount":1000}],"couponId":"c1",` +
			`"subtotal":1000,"discount":100,"points":200,"amountDue":700,"reward":7,"currency":"KRW",` +
			`"payMethod":"CARD","paymentId":"pay-ord_1","paidAt":"2026-03-02T08:59:00Z","at":"2026-03-02T09:00:00Z",` +
			`"rewardShortfall":5,"refundPoints":195,"refundAmount":700}`},
		"order, reward withheld": {commerce.OrderEvent{
			SchemaVersion: 1, OrderID: "ord_1", UserID: "u1", Status: commerce.StatusPaid,
			Lines: []commerce.EventLine{}, AmountDue: 700, RewardWithheld: 7, Currency: "KRW", PaidAt: &paid, At: at,
		}, `{"schemaVersion":1,"orderId":"ord_1","userId":"u1","status":"PAID","lines":[],` +
			`"subtotal":0,"discount":0,"points":0,"amountDue":700,"currency":"KRW",` +
			`"paidAt":"2026-03-02T08:59:00Z","at":"2026-03-02T09:00:00Z","rewardWithheld":7}`},
		"order, minimal": {commerce.OrderEvent{
			SchemaVersion: 1, OrderID: "ord_1", UserID: "u1", Status: commerce.StatusPendingPayment,
			Lines: []commerce.EventLine{}, Currency: "KRW", At: at,
		}, `{"schemaVersion":1,"orderId":"ord_1","userId":"u1","status":"PENDING_PAYMENT","lines":[],` +
			`"subtotal":0,"discount":0,"points":0,"amountDue":0,"currency":"KRW","at":"2026-03-02T09:00:00Z"}`},
		"top-up": {commerce.TopUpEvent{SchemaVersion: 1, TopUpID: "top_1", UserID: "u1", Amount: 5000, PaymentID: "pay-top_1", At: at},
			`{"schemaVersion":1,"topUpId":"top_1","userId":"u1","amount":5000,"paymentId":"pay-top_1","at":"2026-03-02T09:00:00Z"}`},
		"coupon": {commerce.CouponIssuedEvent{SchemaVersion: 1, CouponID: "c1", TemplateID: "t1", UserID: "u1", ExpiresAt: &at, At: at},
			`{"schemaVersion":1,"couponId":"c1","templateId":"t1","userId":"u1","expiresAt":"2026-03-02T09:00:00Z","at":"2026-03-02T09:00:00Z"}`},
	} {
		got, err := json.Marshal(c.payload)
		require.NoError(t, err, name)
		assert.JSONEq(t, c.want, string(got), name)
		assert.Equal(t, c.want, string(got), name+": field order")
	}
}

func TestTopics(t *testing.T) {
	def := commerce.DefaultTopics()
	assert.Equal(t, []string{"commerce-orders", "coupon-issued", "payment-completed", "points-charged"}, def.Names())
	assert.Len(t, def, len(commerce.EventTypes))

	e := commercetest.SQLite(t)
	cfg := commerce.Config{DB: e.DB, Inventory: e.Inventory, Coupons: e.Coupons, Ledger: e.Ledger, Payments: e.Payments, Outbox: &outbox.Writer{}}
	svc, err := commerce.New(cfg, commerce.WithTopics(commerce.Topics{commerce.EventOrderCreated: "created"}))
	require.NoError(t, err)
	got, _ := svc.Topics().Of(commerce.EventOrderCreated)
	assert.Equal(t, "created", got)
	got, _ = svc.Topics().Of(commerce.EventPaymentCompleted)
	assert.Equal(t, "payment-completed", got)
	for _, bad := range []commerce.Topics{{"no-such-event": "x"}, {commerce.EventCouponIssued: ""}} {
		_, err := commerce.New(cfg, commerce.WithTopics(bad))
		require.ErrorIs(t, err, commerce.ErrInvalidConfig, "%v", bad)
	}
}

// TestEventsOnTheirTopics runs an order through payment and cancellation and issues a
// coupon, and checks that every event is in the outbox on its type's default topic with
// the schema version, the coupon's written with the coupon.
func TestEventsOnTheirTopics(t *testing.T) {
	e := commercetest.SQLite(t)
	b := newBuyer(t, e, 0, 100)
	sku := e.Product(t, 1000, 10)
	o := pay(t, e, place(t, e, b, sku, 2, 0), "tok_ok")
	_, err := e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: b.user})
	require.NoError(t, err)

	var rows []struct {
		ID      string `bun:"id"`
		Topic   string `bun:"topic"`
		Key     string `bun:"aggregate_key"`
		Type    string `bun:"event_type"`
		Seq     int64  `bun:"seq"`
		Payload []byte `bun:"payload"`
	}
	require.NoError(t, e.DB.NewSelect().Table(outbox.TableEvents).Column("id", "topic", "aggregate_key", "event_type", "seq", "payload").
		OrderExpr("id").Scan(ctx, &rows))
	types := map[string]string{}
	for _, r := range rows {
		types[r.Type] = r.Topic
		want, _ := commerce.DefaultTopics().Of(r.Type)
		assert.Equal(t, want, r.Topic, r.ID)
		var v struct {
			SchemaVersion int        `json:"schemaVersion"`
			PaidAt        *time.Time `json:"paidAt"`
		}
		require.NoError(t, json.Unmarshal(r.Payload, &v))
		assert.Equal(t, commerce.EventSchemaVersion, v.SchemaVersion, r.ID)
		switch r.Type {
		case commerce.EventOrderCancelled:
			require.NotNil(t, v.PaidAt, "a paid order's cancellation carries paidAt")
			assert.Equal(t, int64(2), r.Seq, "second event of the order's stream on its topic")
		case commerce.EventCouponIssued:
			assert.Equal(t, b.coupon, r.Key)
			assert.Equal(t, int64(1), r.Seq)
		}
	}
	assert.Equal(t, map[string]string{
		commerce.EventCouponIssued: "coupon-issued", commerce.EventOrderCreated: "commerce-orders",
		commerce.EventPaymentCompleted: "payment-completed", commerce.EventOrderCancelled: "commerce-orders",
	}, types)
	e.RequireDelivered(t)
	e.RequireClean(t)
}

// TestCouponEventInTheCouponsTransaction makes the coupon-issued event impossible to write
// (a topic the outbox rejects): the issue fails and no coupon exists, with the SQL issuer
// (one transaction) and with the Redis one (the take is given back).
func TestCouponEventInTheCouponsTransaction(t *testing.T) {
	each(t, func(t *testing.T, e *commercetest.Env) {
		tpl := e.CouponTemplate(t, 1000)
		_, err := e.Service.IssueCoupon(ctx, tpl, "u1", "req-1")
		require.ErrorIs(t, err, outbox.ErrInvalidEvent)
		st, err := e.Coupons.Stats(ctx, tpl)
		require.NoError(t, err)
		assert.Equal(t, int64(0), st.Issued, "no coupon without its event")
		assert.Equal(t, int64(0), st.Taken, "the first-come unit was given back")
	}, commerce.WithTopics(commerce.Topics{commerce.EventCouponIssued: "not a topic!"}))
}
