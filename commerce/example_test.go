package commerce_test

import (
	"context"
	"fmt"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/sqlitedb"
)

// Example is checkout in the embedded configuration: one SQLite database for everything,
// the PG simulator, and an outbox relay printing the events it publishes. A user tops up
// points, orders with a coupon and points, pays the rest by card, and cancels.
func Example() {
	ctx := context.Background()
	db, err := sqlitedb.Open("file:commerce-example?mode=memory&cache=shared")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := commerce.CreateAllSchemas(ctx, db, sqlinventory.CreateSchema, sqlcoupon.CreateSchema); err != nil {
		panic(err)
	}

	pg := must(pgsim.New())
	defer pg.Close()
	payments, err := payment.New(db, pg, payment.WithWebhookVerifier(pg.WebhookVerifier()))
	if err != nil {
		panic(err)
	}
	writer, err := outbox.NewWriter()
	if err != nil {
		panic(err)
	}
	relay, err := outbox.NewRelay(db, outbox.PublisherFunc(func(_ context.Context, events []outbox.Event) error {
		for _, ev := range events {
			fmt.Println("event:", ev.Type)
		}
		return nil
	}))
	if err != nil {
		panic(err)
	}
	svc, err := commerce.New(commerce.Config{
		DB:         db,
		Inventory:  must(inventory.New(sqlinventory.New(db))),
		Coupons:    must(coupon.New(db, sqlcoupon.New())),
		Ledger:     must(ledger.New(db)),
		Payments:   payments,
		Reconciler: must(payment.NewReconciler(payments)),
		Outbox:     writer,
		Relay:      relay,
	}, commerce.WithRewardRate(100)) // 1% of what the card pays comes back as points
	if err != nil {
		panic(err)
	}

	_, err = svc.CreateProduct(ctx, commerce.NewProduct{ID: "mug", Name: "Mug", Price: 12_000, Stock: 100})
	if err != nil {
		panic(err)
	}
	_, err = svc.CreateCouponTemplate(ctx, coupon.Template{ID: "welcome", Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 3_000}})
	if err != nil {
		panic(err)
	}
	cpn, err := svc.IssueCoupon(ctx, "welcome", "alice", "issue-1")
	if err != nil {
		panic(err)
	}
	if _, err := svc.TopUp(ctx, commerce.TopUpRequest{UserID: "alice", Amount: 5_000, Method: payment.MethodCard,
		Token: "tok_visa", IdempotencyKey: "topup-1"}); err != nil {
		panic(err)
	}

	o, err := svc.PlaceOrder(ctx, commerce.PlaceOrderRequest{
		UserID: "alice", Lines: []commerce.Line{{ProductID: "mug", Qty: 2}}, CouponID: cpn.ID, Points: 1_000,
		IdempotencyKey: "order-1",
	})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s: subtotal %d, discount %d, points %d, due %d\n", o.Status, o.Subtotal, o.Discount, o.Points, o.AmountDue)

	o, err = svc.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: "alice", Method: payment.MethodCard,
		Token: "tok_visa", IdempotencyKey: "pay-1"})
	if err != nil {
		panic(err)
	}
	bal, _ := svc.Points(ctx, "alice")
	fmt.Printf("%s: reward %d, points %d\n", o.Status, o.Reward, bal.Available)

	o, err = svc.Cancel(ctx, o.ID, commerce.Actor{UserID: "alice"})
	if err != nil {
		panic(err)
	}
	bal, _ = svc.Points(ctx, "alice")
	mug, _ := svc.GetProduct(ctx, "mug")
	fmt.Printf("%s: points %d, mugs available %d\n", o.Status, bal.Available, mug.Stock.Available)

	if _, err := relay.RelayOnce(ctx); err != nil {
		panic(err)
	}
	report, err := svc.Audit(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("audit clean:", report.OK())
	// Output:
	// PENDING_PAYMENT: subtotal 24000, discount 3000, points 1000, due 20000
	// PAID: reward 200, points 4200
	// CANCELLED: points 5000, mugs available 100
	// event: coupon-issued
	// event: points-charged
	// event: order-created
	// event: payment-completed
	// event: order-cancelled
	// audit clean: true
}

// must returns v, and panics on err: a constructor refuses only invalid options.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
