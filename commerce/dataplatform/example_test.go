package dataplatform_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/dataplatform"
	"github.com/commercekit/commercekit/commerce/dataplatform/platformsim"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/sqlitedb"
)

// A paid order is queued by the consumer and sent to the (mock) platform.
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
	if err := dataplatform.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	platform := platformsim.New()
	srv := httptest.NewServer(platform)
	defer srv.Close()

	n, err := dataplatform.New(db, srv.URL+"/v1/orders")
	if err != nil {
		panic(err)
	}
	consumer, err := n.NewConsumer()
	if err != nil {
		panic(err)
	}
	err = consumer.Deliver(ctx, []outbox.Event{{ID: "ord_1-payment-completed", Topic: commerce.TopicPaymentCompleted,
		Key: "ord_1", Type: commerce.EventPaymentCompleted, Payload: []byte(`{"schemaVersion":1,"orderId":"ord_1"}`), Seq: 1}})
	if err != nil {
		panic(err)
	}
	sent, err := n.SendOnce(ctx)
	if err != nil {
		panic(err)
	}
	got := platform.Received()
	fmt.Println(sent, got[0].IdempotencyKey, string(got[0].Body))
	// Output: 1 ord_1-payment-completed {"schemaVersion":1,"orderId":"ord_1"}
}
