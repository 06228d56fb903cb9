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
// completion). Every order buys one unit of one of
// `skus` products.
func BenchmarkCheckout(b *testing.B) {
	for _, c := range commercetest.Configs {
		for _, skus := range []int{1, 100} {
			for _, withPay := range []bool{false, true} {
				name := fmt.Sprintf("%s/skus=%d/place", c.Name, skus)
				if withPay {
					name += "+pay"
				}
				b.Run(name, func(b *testing.B) { benchCheckout(b, c.New(b), skus, withPay) })
			}
		}
	}
}

func benchCheckout(b *testing.B, e *commercetest.Env, skus int, withPay bool) {
	ids := make([]string, skus)
	for i := range ids {
		ids[i] = e.Product(b, 10_000, 10_000_000)
	}
	var n atomic.Int64
	b.SetParallelism((50 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			user := fmt.Sprintf("bench-%d", i)
			o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: user, IdempotencyKey: "k",
				Lines: []commerce.Line{{ProductID: ids[int(i)%skus], Qty: 1}}})
			if err != nil {
				b.Error(err)
				return
			}
			if !withPay {
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
}
