package ledger_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

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
						_, err := l.Spend(ctx, ledger.SpendRequest{ID: fmt.Sprint("s", n), User: fmt.Sprint("u", n%int64(accounts)), Amount: 1})
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "spends/s")
			})
		}
	}
}
