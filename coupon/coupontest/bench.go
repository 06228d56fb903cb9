package coupontest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/commercekit/commercekit/coupon"
)

// BenchClients is how many goroutines the benchmarks issue from.
const BenchClients = 50

// Parallel runs fn(i) with i = 0, 1, 2, ... b.N times in all from BenchClients goroutines,
// and reports ops/s.
func Parallel(b *testing.B, fn func(i int64) error) {
	b.SetParallelism((BenchClients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := fn(next.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkIssue measures issuance that succeeds: one template of unlimited quantity,
// every request from a new user, so each one takes and writes a coupon.
func BenchmarkIssue(b *testing.B, svc *coupon.Service) {
	ctx := context.Background()
	tpl, err := svc.CreateTemplate(ctx, coupon.Template{ID: "bench", Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 1000}})
	if err != nil {
		b.Fatal(err)
	}
	Parallel(b, func(i int64) error {
		_, err := svc.Issue(ctx, tpl.ID, fmt.Sprint("user-", i), fmt.Sprint("req-", i))
		return err
	})
}

// BenchmarkIssueSoldOut measures the rush after the last coupon: every request, from a
// new user, is turned away.
func BenchmarkIssueSoldOut(b *testing.B, svc *coupon.Service) {
	ctx := context.Background()
	tpl, err := svc.CreateTemplate(ctx, coupon.Template{ID: "bench-sold-out", Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 1000}, TotalQuantity: 1})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := svc.Issue(ctx, tpl.ID, "first", "first"); err != nil {
		b.Fatal(err)
	}
	Parallel(b, func(i int64) error {
		_, err := svc.Issue(ctx, tpl.ID, fmt.Sprint("user-", i), fmt.Sprint("req-", i))
		if errors.Is(err, coupon.ErrSoldOut) {
			return nil
		}
		return fmt.Errorf("want sold out, got %v", err)
	})
}
