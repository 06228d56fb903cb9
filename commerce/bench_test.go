package commerce_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/payment"
)

// BenchmarkCheckout measures orders per second from 50 concurrent clients on each
// configuration: PlaceOrder alone (stock, order row and event in one transaction), and
// PlaceOrder followed by a card payment through the in-process PG simulator (three more
// transactions: the move to PAYING with the payment's record, the PG's answer, the
// completion). Every order buys one unit of one of `skus` products; the flash sale's
// checkout ("place+pay+coupon+points") also spends a coupon and points. It reports the SQL
// statements sent per order (BEGIN and COMMIT included), whatever sent them.
func BenchmarkCheckout(b *testing.B) {
	for _, c := range commercetest.Configs {
		for _, run := range []checkoutRun{{1, false, false}, {1, true, false}, {1, true, true}, {100, false, false}, {100, true, false}} {
			name := fmt.Sprintf("%s/skus=%d/place", c.Name, run.skus)
			if run.pay {
				name += "+pay"
			}
			if run.extras {
				name += "+coupon+points"
			}
			b.Run(name, func(b *testing.B) { benchCheckout(b, c.New(b), run) })
		}
	}
}

// checkoutRun is one kind of checkout: over how many products, whether the order is paid,
// and whether it spends a coupon and points.
type checkoutRun struct {
	skus        int
	pay, extras bool
}

func benchCheckout(b *testing.B, e *commercetest.Env, run checkoutRun) {
	ids := make([]string, run.skus)
	for i := range ids {
		ids[i] = e.Product(b, 10_000, 10_000_000)
	}
	coupons := make([]string, b.N+1)
	if run.extras {
		tpl := e.CouponTemplate(b, 2_000)
		for i := 1; i <= b.N; i++ {
			coupons[i] = e.GiveCoupon(b, tpl, fmt.Sprintf("bench-%d", i))
			e.GivePoints(b, fmt.Sprintf("bench-%d", i), 1_000)
		}
	}
	var n atomic.Int64
	b.SetParallelism((50 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	statements := e.Statements.All.Load()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			user := fmt.Sprintf("bench-%d", i)
			req := commerce.PlaceOrderRequest{UserID: user, IdempotencyKey: "k",
				Lines: []commerce.Line{{ProductID: ids[int(i)%run.skus], Qty: 1}}}
			if run.extras {
				req.CouponID, req.Points = coupons[i], 1_000
			}
			o, err := e.Service.PlaceOrder(ctx, req)
			if err != nil {
				b.Error(err)
				return
			}
			if !run.pay {
				continue
			}
			o, err = e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: user, Method: payment.MethodCard,
				Token: "tok", IdempotencyKey: "k"})
			if err != nil || o.Status != commerce.StatusPaid {
				b.Error(o.Status, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
	b.ReportMetric(float64(e.Statements.All.Load()-statements)/float64(b.N), "statements/order")
}
