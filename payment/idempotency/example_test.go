package idempotency_test

import (
	"context"
	"fmt"

	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/payment/idempotency/sqlidempotency"
	"github.com/commercekit/commercekit/sqlitedb"
)

// A payment endpoint guarded by the Idempotency-Key header, on a SQLite store: the retry
// gets the stored response without charging again, and the same key with another body is
// refused.
func Example() {
	ctx := context.Background()
	db, err := sqlitedb.Open(":memory:")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := sqlidempotency.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	store, err := idempotency.New(sqlidempotency.New(db))
	if err != nil {
		panic(err)
	}

	pay := func(idemKey string, body []byte) {
		fp := idempotency.FingerprintRequest("POST", "/v1/payments", body)
		resp, replayed, err := store.Do(ctx, "merchant-42", idemKey, fp, func(ctx context.Context) (idempotency.Response, error) {
			fmt.Println("charging the card")
			return idempotency.Response{Status: 201, Body: []byte(`{"payment":"p-1","status":"APPROVED"}`)}, nil
		})
		if status, ok := idempotency.HTTPStatus(err); ok {
			fmt.Println(status, err)
			return
		}
		fmt.Println(resp.Status, string(resp.Body), "replayed:", replayed)
	}

	pay("9d4c7a6e", []byte(`{"order":"o-1","amount":15000}`))
	pay("9d4c7a6e", []byte(`{ "amount": 15000, "order": "o-1" }`)) // same request, re-serialised
	pay("9d4c7a6e", []byte(`{"order":"o-1","amount":99000}`))

	// Output:
	// charging the card
	// 201 {"payment":"p-1","status":"APPROVED"} replayed: false
	// 201 {"payment":"p-1","status":"APPROVED"} replayed: true
	// 422 idempotency: key reused with a different request (scope "merchant-42", key "9d4c7a6e")
}

// A business failure is a final response: it is stored and replayed, so a retry sees the
// same decline instead of charging again. A transient failure is an error: nothing is
// stored and the retry runs.
func ExampleFunc() {
	ctx := context.Background()
	db, err := sqlitedb.Open(":memory:")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := sqlidempotency.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	store, err := idempotency.New(sqlidempotency.New(db))
	if err != nil {
		panic(err)
	}

	pgAnswers := []string{"unavailable", "declined", "approved"}
	approve := func(ctx context.Context) (idempotency.Response, error) {
		answer := pgAnswers[0]
		pgAnswers = pgAnswers[1:]
		fmt.Println("PG says", answer)
		switch answer {
		case "unavailable":
			return idempotency.Response{}, fmt.Errorf("PG unavailable, retry later") // released
		case "declined":
			return idempotency.Response{Status: 402, ErrorCode: "card_declined"}, nil // stored
		}
		return idempotency.Response{Status: 201}, nil
	}
	fp := idempotency.FingerprintRequest("POST", "/v1/payments", []byte(`{"order":"o-7"}`))
	for range 3 {
		resp, replayed, err := store.Do(ctx, "merchant-42", "key-7", fp, approve)
		fmt.Println(resp.Status, resp.ErrorCode, replayed, err)
	}

	// Output:
	// PG says unavailable
	// 0  false PG unavailable, retry later
	// PG says declined
	// 402 card_declined false <nil>
	// 402 card_declined true <nil>
}
