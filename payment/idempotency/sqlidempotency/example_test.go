package sqlidempotency_test

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/payment/idempotency/sqlidempotency"
	"github.com/commercekit/commercekit/sqlitedb"
)

// Storing the response in the same transaction as the order it describes: after a crash
// there is either both or neither, never an order whose retry would place it again.
func ExampleBackend_WithTx() {
	ctx := context.Background()
	db, err := sqlitedb.Open(":memory:")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := sqlidempotency.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY)`); err != nil {
		panic(err)
	}
	backend := sqlidempotency.New(db)
	store, err := idempotency.New(backend)
	if err != nil {
		panic(err)
	}

	placeOrder := func(key string) {
		fp := idempotency.FingerprintRequest("POST", "/v1/orders", []byte(`{"cart":"c-1"}`))
		claim, err := store.Claim(ctx, "customer-7", key, fp) // committed at once: others see it
		if err != nil {
			fmt.Println(err)
			return
		}
		if claim.Replayed {
			fmt.Println("replayed:", string(claim.Response.Body))
			return
		}
		err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id) VALUES ('o-1')`); err != nil {
				return err
			}
			resp := idempotency.Response{Status: 201, Body: []byte(`{"order":"o-1"}`)}
			return store.WithBackend(backend.WithTx(tx)).Complete(ctx, claim, resp)
		})
		if err != nil {
			_ = store.Release(ctx, claim) // nothing committed: let the client retry
			fmt.Println(err)
			return
		}
		fmt.Println("placed o-1")
	}

	placeOrder("k-1")
	placeOrder("k-1")
	var n int
	if err := db.NewSelect().Table("orders").ColumnExpr("count(*)").Scan(ctx, &n); err != nil {
		panic(err)
	}
	fmt.Println("orders:", n)

	// Output:
	// placed o-1
	// replayed: {"order":"o-1"}
	// orders: 1
}
