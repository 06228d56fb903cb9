package ledger_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/feature"

	"github.com/commercekit/commercekit/internal/testenv"
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

// TestStatementsPerOperation counts the statements of each operation in a transaction of
// its own, BEGIN and COMMIT included (a checkout's part is Hold when it places the order,
// CaptureAll and Earn when it is paid). Where the dialect has INSERT ... RETURNING the
// journal's INSERT reads the balance after the transfer: no SELECT of the account follows
// its UPDATE. Spending expiring points adds the statements that use up their lots: a read
// of their IDs, a locking read of those rows by primary key, and a write per lot.
func TestStatementsPerOperation(t *testing.T) {
	ops := []struct {
		name string
		// setup runs before the count starts.
		setup func(e *env)
		do    func(e *env) (ledger.Receipt, error)
		// returning and without are the statements with and without INSERT ... RETURNING.
		returning, without int64
	}{
		{"Charge", nil, func(e *env) (ledger.Receipt, error) {
			return e.l.Charge(e.ctx, ledger.ChargeRequest{ID: "c1", User: "alice", Amount: 1000})
		}, 4, 5},
		{"Earn", nil, func(e *env) (ledger.Receipt, error) {
			return e.l.Earn(e.ctx, ledger.EarnRequest{ID: "e1", User: "alice", Amount: 10})
		}, 4, 5},
		{"Hold", nil, func(e *env) (ledger.Receipt, error) { return e.l.Hold(e.ctx, "h1", "alice", 100, time.Hour) }, 5, 6},
		{"CaptureAll", nil, func(e *env) (ledger.Receipt, error) { return e.l.CaptureAll(e.ctx, "h1") }, 6, 7},
		{"Void", func(e *env) { e.hold("h2", "alice", 100) }, func(e *env) (ledger.Receipt, error) { return e.l.Void(e.ctx, "h2") }, 6, 7},
		{"Spend", nil, func(e *env) (ledger.Receipt, error) { return e.spend("s1", "alice", 20) }, 4, 5},
		{"Adjust down", nil, func(e *env) (ledger.Receipt, error) {
			return e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a1", User: "alice", Delta: -5, Reason: "fix"})
		}, 4, 5},
		{"Refund", nil, func(e *env) (ledger.Receipt, error) {
			return e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r1", SpendID: "s1", Amount: 5})
		}, 7, 8}, // the spend's seq, then its row locked by seq
		{"Earn expiring", nil, func(e *env) (ledger.Receipt, error) {
			return e.l.Earn(e.ctx, ledger.EarnRequest{ID: "e2", User: "alice", Amount: 50, ExpiresAt: e.clock.Now().Add(time.Hour)})
		}, 5, 6},
		{"Capture part, of expiring points", func(e *env) { e.hold("h3", "alice", 100) },
			func(e *env) (ledger.Receipt, error) { return e.l.Capture(e.ctx, "h3", 30) }, 11, 12},
		{"Spend of expiring points", nil, func(e *env) (ledger.Receipt, error) { return e.spend("s2", "alice", 20) }, 8, 9},
	}
	for _, d := range databases() {
		t.Run(d.Name, func(t *testing.T) {
			count := &testkit.Statements{}
			db := d.Open(t)
			e := newEnv(t, db.WithQueryHook(count))
			returning := db.Dialect().Features().Has(feature.InsertReturning)
			if d.Name == "MySQL" && strings.Contains(testenv.MySQLServerFor(t).Version, "MariaDB") {
				require.True(t, returning, "bun sees INSERT ... RETURNING in MariaDB %s", testenv.MySQLServerFor(t).Version)
			}
			for _, op := range ops {
				if op.setup != nil {
					op.setup(e)
				}
				before := count.All.Load()
				_, err := op.do(e)
				require.NoError(t, err, op.name)
				n := count.All.Load() - before
				want := op.without
				if returning {
					want = op.returning
				}
				t.Logf("%-34s %d statements", op.name, n)
				assert.Equal(t, want, n, op.name)
			}
			e.verify()
			e.requireChain("alice")
		})
	}
}
