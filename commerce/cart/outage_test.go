package cart_test

import (
	"testing"

	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

// TestCallsDuringAnOutage: with the database server down, every call of the cart fails with
// an error matching errcode.ErrUnavailable, so that a caller of the library can tell "retry
// later" from a bug or a business answer.
func TestCallsDuringAnOutage(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	e, _ := commercetest.MySQLLinkedAt(t, dsn)
	c := newCart(t, e, e.Service)
	sku := e.Product(t, 1000, 10)
	add(t, c, "u1", sku, 1)

	server.Stop(t, 0)
	calls := map[string]func() error{
		"Get":     func() error { _, err := c.Get(ctx, "u1"); return err },
		"Add":     func() error { _, err := c.Add(ctx, "u1", sku, 1); return err },
		"AddOnce": func() error { _, err := c.AddOnce(ctx, "u1", sku, 1, "k"); return err },
		"SetQty":  func() error { _, err := c.SetQty(ctx, "u1", sku, 2); return err },
		"Remove":  func() error { _, err := c.Remove(ctx, "u1", sku); return err },
		"Checkout": func() error {
			_, err := c.Checkout(ctx, cart.CheckoutRequest{UserID: "u1", IdempotencyKey: "c"})
			return err
		},
	}
	testkit.AllUnavailable(t, calls)
}
