package ledger_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
)

// clients is how many goroutines the benchmarks spend from at once, as the raw-limits
// driver (/work/shared/tools/raw-limits) uses 50 connections.
const clients = 50

// BenchmarkSpend spends 1 point per operation from ~50 goroutines, on one hot account and
// spread over 1,000 accounts (the raw-limits driver's 1 and 1,000 rows), on each backend.
// It reports spends/s beside ns/op. See the package documentation for the command that
// measures it against a native MariaDB beside the raw single-row transaction rate.
func BenchmarkSpend(b *testing.B) {
	benchAccounts(b, "spends/s", func(ctx context.Context, l *ledger.Ledger, n int64, user string) error {
		_, err := l.Spend(ctx, ledger.SpendRequest{ID: fmt.Sprint("s", n), User: user, Amount: 1})
		return err
	})
}

// BenchmarkCheckout runs the ledger's part of a checkout paid partly with points per
// operation: Hold (placing the order), then CaptureAll and Earn of the reward (paying it),
// each in a transaction of its own. It reports checkouts/s.
func BenchmarkCheckout(b *testing.B) {
	benchAccounts(b, "checkouts/s", func(ctx context.Context, l *ledger.Ledger, n int64, user string) error {
		id := fmt.Sprint("h", n)
		if _, err := l.Hold(ctx, id, user, 10, 15*time.Minute); err != nil {
			return err
		}
		if _, err := l.CaptureAll(ctx, id); err != nil {
			return err
		}
		_, err := l.Earn(ctx, ledger.EarnRequest{ID: fmt.Sprint("r", n), User: user, Amount: 1})
		return err
	})
}

// benchAccounts runs op from ~50 goroutines on one hot funded account and spread over
// 1,000, on each database, and reports its rate as unit.
func benchAccounts(b *testing.B, unit string, op func(ctx context.Context, l *ledger.Ledger, n int64, user string) error) {
	for _, be := range databases() {
		for _, accounts := range []int{1, 1000} {
			name := fmt.Sprintf("%s/hot", be.Name)
			if accounts > 1 {
				name = fmt.Sprintf("%s/spread-%d", be.Name, accounts)
			}
			b.Run(name, func(b *testing.B) {
				ctx := context.Background()
				db := be.Open(b)
				require.NoError(b, ledger.CreateSchema(ctx, db))
				l := testkit.Must(ledger.New(db))(b)
				require.NoError(b, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
					for i := range accounts {
						_, err := l.WithTx(tx).Charge(ctx, ledger.ChargeRequest{ID: fmt.Sprint("fund-", i), User: fmt.Sprint("u", i), Amount: ledger.MaxAmount})
						if err != nil {
							return err
						}
					}
					return nil
				}))
				var seq atomic.Int64
				b.SetParallelism((clients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						n := seq.Add(1)
						if err := op(ctx, l, n, fmt.Sprint("u", n%int64(accounts))); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit)
			})
		}
	}
}
