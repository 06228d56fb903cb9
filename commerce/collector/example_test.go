package collector_test

import (
	"context"
	"fmt"
	"time"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/sqlitedb"
)

// A sale is collected, rolled up and ranked.
func Example() {
	ctx := context.Background()
	db, err := sqlitedb.Open("file::memory:?cache=shared")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := outbox.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	if err := collector.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	c, err := collector.New(db)
	if err != nil {
		panic(err)
	}
	consumer, err := c.NewConsumer()
	if err != nil {
		panic(err)
	}
	// What commerce writes when an order is paid (normally delivered by the relay).
	payload := `{"schemaVersion":1,"orderId":"ord_1","userId":"u1","status":"PAID",` +
		`"lines":[{"productId":"tee","qty":2,"unitPrice":15000,"amount":30000}],` +
		`"subtotal":30000,"discount":0,"points":0,"amountDue":30000,"currency":"KRW","at":"2026-03-04T03:00:00Z"}`
	err = consumer.Deliver(ctx, []outbox.Event{{ID: "ord_1-payment-completed", Topic: commerce.TopicPaymentCompleted,
		Key: "ord_1", Type: commerce.EventPaymentCompleted, Payload: []byte(payload), Seq: 1, CreatedAt: time.Now()}})
	if err != nil {
		panic(err)
	}
	if _, err := c.RollupDirty(ctx); err != nil {
		panic(err)
	}
	week, _ := collector.ParseDate("2026-03-04")
	top, err := c.Ranking(ctx, collector.Weekly, week, 10)
	if err != nil {
		panic(err)
	}
	for _, r := range top {
		fmt.Println(r.Rank, r.ProductID, r.NetUnits, r.NetRevenue)
	}
	// Output: 1 tee 2 30000
}
