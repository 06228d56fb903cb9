package dataplatform_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http/httptest"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/dataplatform"
	"github.com/commercekit/commercekit/commerce/dataplatform/platformsim"
	"github.com/commercekit/commercekit/outbox"
)

// A paid order is queued by the consumer and sent to the (mock) platform.
func Example() {
	ctx := context.Background()
	sqldb, err := sql.Open(sqliteshim.ShimName, "file::memory:?cache=shared")
	if err != nil {
		panic(err)
	}
	sqldb.SetMaxOpenConns(1)
	db := bun.NewDB(sqldb, sqlitedialect.New())
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
