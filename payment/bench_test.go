package payment_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/payment/resilient"
)

// BenchmarkPay measures approvals per second through the whole Service (record, PG call,
// record the answer: two transactions per payment) against the in-process simulator at zero
// latency, i.e. the library's and the database's own cost, with and without the policies.
func BenchmarkPay(b *testing.B) {
	for _, store := range testenv.Databases() {
		for _, gw := range []struct {
			name string
			wrap func(payment.Gateway) payment.Gateway
		}{
			{"bare", func(g payment.Gateway) payment.Gateway { return g }},
			{"policies", func(g payment.Gateway) payment.Gateway { return testkit.Must(resilient.Wrap(g))(b) }},
		} {
			b.Run(store.Name+"/"+gw.name, func(b *testing.B) {
				ctx := context.Background()
				db := store.Open(b)
				if err := payment.CreateSchema(ctx, db); err != nil {
					b.Fatal(err)
				}
				sim := testkit.Must(pgsim.New())(b)
				defer sim.Close()
				svc, err := payment.New(db, gw.wrap(sim))
				if err != nil {
					b.Fatal(err)
				}
				var seq atomic.Int64
				b.SetParallelism(4)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						id := fmt.Sprintf("bench-%d", seq.Add(1))
						if _, err := svc.Pay(ctx, payment.PayRequest{PaymentID: id, OrderID: id, Amount: 10_000,
							Currency: "KRW", Method: payment.MethodCard, Token: "tok_visa"}); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "approvals/s")
				if got := sim.Stats().Charges; got != b.N {
					b.Fatalf("%d charges for %d payments", got, b.N)
				}
			})
		}
	}
}
