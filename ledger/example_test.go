package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/sqlitedb"
)

// A checkout on SQLite: points are charged after a payment, held while the card is
// charged, captured (partly) when the order is placed, and one spend is refunded.
func Example() {
	ctx := context.Background()
	db, err := sqlitedb.Open("file:example?mode=memory&cache=shared")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := ledger.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	l, err := ledger.New(db)
	if err != nil {
		panic(err)
	}

	_, err = l.Charge(ctx, ledger.ChargeRequest{ID: "pay-1", User: "alice", Amount: 10_000, Reference: "payment-1"})
	if err != nil {
		panic(err)
	}
	r, _ := l.Hold(ctx, "order-7/points", "alice", 3_000, 15*time.Minute)
	fmt.Println("held:", r.Balance.Available, r.Balance.Held)

	r, _ = l.Capture(ctx, "order-7/points", 2_500) // the other 500 return
	fmt.Println("captured:", r.Balance.Available, r.Balance.Held)

	_, err = l.Spend(ctx, ledger.SpendRequest{ID: "order-8/points", User: "alice", Amount: 9_000, Reference: "order-8"})
	var short *ledger.InsufficientPointsError
	if errors.As(err, &short) {
		fmt.Println("insufficient:", short.Available, "available,", short.Requested, "requested")
	}

	_, _ = l.Refund(ctx, ledger.RefundRequest{ID: "cancel-7", SpendID: "order-7/points", Amount: 1_000})
	page, _ := l.History(ctx, "alice", "", 10)
	for _, e := range page.Entries {
		fmt.Printf("%-8s %6d  balance %d\n", e.Type, e.Change, e.Balance.Total)
	}

	report, err := l.Verify(ctx)
	fmt.Println("verify:", err == nil, report.System[ledger.AccountRedeemed], report.Sum)
	// Output:
	// held: 7000 3000
	// captured: 7500 0
	// insufficient: 7500 available, 9000 requested
	// refund     1000  balance 8500
	// release       0  balance 7500
	// capture   -2500  balance 7500
	// hold          0  balance 10000
	// charge    10000  balance 10000
	// verify: true 1500 0
}
