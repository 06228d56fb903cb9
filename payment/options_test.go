package payment_test

import (
	"testing"
	"time"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// TestConstructorsRefuseBadOptions checks that New and NewReconciler refuse every invalid
// option value with an error naming the option. Valid values are shown taking effect by
// the tests using them (WithThreshold, WithBatchSize and WithConcurrency in
// TestReconcilerRun, WithClock and WithWebhookVerifier everywhere).
func TestConstructorsRefuseBadOptions(t *testing.T) {
	db := testenv.SQLite(t)
	sim := testkit.Must(pgsim.New())(t)
	t.Cleanup(sim.Close)
	testkit.RefusesBadOptions(t, func(opts ...payment.Option) (*payment.Service, error) { return payment.New(db, sim, opts...) },
		map[string]payment.Option{
			"WithClock: nil":           payment.WithClock(nil),
			"WithLogger: nil":          payment.WithLogger(nil),
			"WithObserver: nil":        payment.WithObserver(nil),
			"WithWebhookVerifier: nil": payment.WithWebhookVerifier(nil),
		})

	svc := testkit.Must(payment.New(db, sim))(t)
	construct := func(opts ...payment.ReconcilerOption) (*payment.Reconciler, error) {
		return payment.NewReconciler(svc, opts...)
	}
	testkit.RefusesBadOptions(t, construct, map[string]payment.ReconcilerOption{
		"WithThreshold: -1s":  payment.WithThreshold(-time.Second),
		"WithInterval: 0s":    payment.WithInterval(0),
		"WithInterval: -1s":   payment.WithInterval(-time.Second),
		"WithBatchSize: 0":    payment.WithBatchSize(0),
		"WithBatchSize: -1":   payment.WithBatchSize(-1),
		"WithConcurrency: 0":  payment.WithConcurrency(0),
		"WithConcurrency: -1": payment.WithConcurrency(-1),
	})
	testkit.Must(construct(payment.WithThreshold(0), payment.WithInterval(time.Millisecond),
		payment.WithBatchSize(1), payment.WithConcurrency(1)))(t)
}
