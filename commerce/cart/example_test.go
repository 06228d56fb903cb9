package cart_test

import (
	"context"
	"fmt"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
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

// Example fills a cart on the embedded configuration (one SQLite database) and orders it:
// the order holds the cart's lines, and the cart is empty afterwards.
func Example() {
	ctx := context.Background()
	db, err := sqlitedb.Open("file:cart-example?mode=memory&cache=shared")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := commerce.CreateAllSchemas(ctx, db, sqlinventory.CreateSchema, sqlcoupon.CreateSchema); err != nil {
		panic(err)
	}
	if err := cart.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	pg := must(pgsim.New())
	defer pg.Close()
	payments, err := payment.New(db, pg)
	if err != nil {
		panic(err)
	}
	writer, err := outbox.NewWriter()
	if err != nil {
		panic(err)
	}
	relay, err := outbox.NewRelay(db, outbox.PublisherFunc(func(context.Context, []outbox.Event) error { return nil }))
	if err != nil {
		panic(err)
	}
	svc, err := commerce.New(commerce.Config{
		DB: db, Inventory: must(inventory.New(sqlinventory.New(db))), Coupons: must(coupon.New(db, sqlcoupon.New())),
		Ledger: must(ledger.New(db)), Payments: payments, Reconciler: must(payment.NewReconciler(payments)),
		Outbox: writer, Relay: relay,
	})
	if err != nil {
		panic(err)
	}
	for _, p := range []commerce.NewProduct{
		{ID: "mug", Name: "Mug", Price: 12_000, Stock: 100},
		{ID: "tea", Name: "Tea", Price: 4_500, Stock: 0},
	} {
		if _, err := svc.CreateProduct(ctx, p); err != nil {
			panic(err)
		}
	}

	carts, err := cart.New(db, svc)
	if err != nil {
		panic(err)
	}
	if _, err := carts.Add(ctx, "alice", "mug", 1); err != nil {
		panic(err)
	}
	if _, err := carts.Add(ctx, "alice", "tea", 2); err != nil {
		panic(err)
	}
	c, err := carts.SetQty(ctx, "alice", "mug", 2)
	if err != nil {
		panic(err)
	}
	for _, it := range c.Items {
		fmt.Printf("%s × %d = %d (in stock: %v)\n", it.Name, it.Qty, it.Amount, it.InStock)
	}
	if _, err := carts.Remove(ctx, "alice", "tea"); err != nil {
		panic(err)
	}

	o, err := carts.Checkout(ctx, cart.CheckoutRequest{UserID: "alice", IdempotencyKey: "checkout-1"})
	if err != nil {
		panic(err)
	}
	c, _ = carts.Get(ctx, "alice")
	fmt.Printf("%s: %d lines, subtotal %d; cart lines left: %d\n", o.Status, len(o.Lines), o.Subtotal, len(c.Items))
	// Output:
	// Mug × 2 = 24000 (in stock: true)
	// Tea × 2 = 9000 (in stock: false)
	// PENDING_PAYMENT: 1 lines, subtotal 24000; cart lines left: 0
}

// must returns v, and panics on err: a constructor refuses only invalid options.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
