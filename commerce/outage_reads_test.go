package commerce_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
)

// TestReadsDuringAnOutage: with the database server down, every read of commerce and of
// the payment, coupon and outbox packages fails with an error matching errcode.ErrUnavailable, so that a
// caller of the library (not only refserver, whose last-resort classifier would answer
// 503 anyway) can tell "retry later" from a bug, as it can for every write. (A coupon
// template is read from the coupon Service's cache, and answers.)
func TestReadsDuringAnOutage(t *testing.T) {
	server, dsn := testenv.OwnMySQL(t)
	e, _ := commercetest.MySQLLinkedAt(t, dsn)
	sku := e.Product(t, 1000, 10)
	b := newBuyer(t, e, 0, 0)
	tpl := e.CouponTemplate(t, 100)
	cpn := e.GiveCoupon(t, tpl, b.user)
	o := pay(t, e, place(t, e, b, sku, 1, 0), "tok_ok")
	tu := testkit.Must(e.Service.TopUp(ctx, commerce.TopUpRequest{UserID: b.user, Amount: 1000, Method: payment.MethodCard,
		Token: "tok_ok", IdempotencyKey: "tu"}))(t)
	pays := testkit.Must(e.Payments.ByOrder(ctx, o.ID))(t)
	require.Len(t, pays, 1)
	admin := commerce.Actor{Admin: true}

	server.Stop(t, 0)
	reads := map[string]func() error{
		"GetOrder":           func() error { _, err := e.Service.GetOrder(ctx, o.ID, admin); return err },
		"ListOrders":         func() error { _, err := e.Service.ListOrders(ctx, b.user, commerce.OrderQuery{}); return err },
		"OrderByKey":         func() error { _, err := e.Service.OrderByKey(ctx, b.user, "k"); return err },
		"OrderPayment":       func() error { _, err := e.Service.OrderPayment(ctx, o.ID, admin); return err },
		"GetTopUp":           func() error { _, err := e.Service.GetTopUp(ctx, tu.ID, admin); return err },
		"TopUpPayment":       func() error { _, err := e.Service.TopUpPayment(ctx, tu.ID, admin); return err },
		"GetProduct":         func() error { _, err := e.Service.GetProduct(ctx, sku); return err },
		"ListProducts":       func() error { _, err := e.Service.ListProducts(ctx, commerce.ProductQuery{}); return err },
		"Products":           func() error { _, err := e.Service.Products(ctx, []string{sku}); return err },
		"Points":             func() error { _, err := e.Service.Points(ctx, b.user); return err },
		"PointHistory":       func() error { _, err := e.Service.PointHistory(ctx, b.user, "", 0); return err },
		"payment.Get":        func() error { _, err := e.Payments.Get(ctx, pays[0].ID); return err },
		"payment.ByOrder":    func() error { _, err := e.Payments.ByOrder(ctx, o.ID); return err },
		"payment.Refunds":    func() error { _, err := e.Payments.Refunds(ctx, pays[0].ID); return err },
		"payment.GetRefund":  func() error { _, err := e.Payments.GetRefund(ctx, "r-1"); return err },
		"coupon.Wallet":      func() error { _, err := e.Coupons.Wallet(ctx, b.user, coupon.WalletQuery{}); return err },
		"coupon.Coupon":      func() error { _, err := e.Coupons.Coupon(ctx, cpn); return err },
		"coupon.Stats":       func() error { _, err := e.Coupons.Stats(ctx, tpl); return err },
		"coupon.Redemptions": func() error { _, err := e.Coupons.Redemptions(ctx, o.ID); return err },
		"outbox.DeadLetters": func() error { _, err := e.Relay.DeadLetters(ctx, 10); return err },
		"inventory.Stock":    func() error { _, err := e.Inventory.Stock(ctx, sku); return err },
		"Stocks":             func() error { _, err := e.Service.Stocks(ctx, []string{sku}); return err },
		"outbox.Lag":         func() error { _, err := e.Relay.Lag(ctx); return err },
		"Audit":              func() error { _, err := e.Service.Audit(ctx); return err },
	}
	testkit.AllUnavailable(t, reads)
}
