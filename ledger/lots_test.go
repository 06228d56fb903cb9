package ledger_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
)

// TestSpendOfManyLotsLocksOnlyThem: a spend from a user with a few hundred lots, whose
// statistics are up to date, locks those lots by primary key and no gap in any index of
// ledger_lots: another user earns expiring points beside them in every index (ID beside a
// lot the spend used up, the same expiry, the user ID between the spender's and the next
// user's) without waiting, and the spend still took the soonest-expiring lots first.
func TestSpendOfManyLotsLocksOnlyThem(t *testing.T) {
	e := newEnv(t, testenv.MySQL(t))
	const n = 300
	for i := range n {
		e.earn(fmt.Sprintf("e%04d", 2*i), "u1", 10, day+time.Duration(n-i)*time.Minute) // the last IDs expire first
		if i%10 == 0 {
			e.earn(fmt.Sprintf("f%04d", i), "u3", 10, day)
		}
	}
	e.exec("ANALYZE TABLE ledger_lots")

	tx := e.inTx(func(l *ledger.Ledger) {
		_, err := l.Spend(e.ctx, ledger.SpendRequest{ID: "s1", User: "u1", Amount: 1005})
		require.NoError(t, err)
	})
	used := fmt.Sprintf("e%04d", 2*(n-1)) // expired first: used up
	err := e.probe(func(ctx context.Context, l *ledger.Ledger) error {
		_, err := l.Earn(ctx, ledger.EarnRequest{ID: fmt.Sprintf("e%04d", 2*(n-1)-1), User: "u2", Amount: 10,
			ExpiresAt: e.clock.Now().Add(day + time.Minute)})
		return err
	})
	require.NoError(t, err, "u2's earn beside %s waited for u1's spend", used)
	err = e.probe(func(ctx context.Context, l *ledger.Ledger) error {
		_, err := l.Spend(ctx, ledger.SpendRequest{ID: "s3", User: "u3", Amount: 15})
		return err
	})
	require.NoError(t, err, "u3's spend waited for u1's spend")
	require.NoError(t, tx.Commit())

	lots := e.expiring("u1")
	require.Len(t, lots, n-100)
	require.EqualValues(t, 5, lots[fmt.Sprintf("e%04d", 2*(n-101))], "the 101st lot to expire, half used")
	require.NotContains(t, lots, used)
	require.Contains(t, lots, "e0000")
	e.verify()
}

// TestDebitsFindALotEarnedAfterTheirSnapshot: every debit that uses up expiring points
// (a spend, a partial capture, a negative adjustment), run in a caller's transaction at
// REPEATABLE READ or READ COMMITTED whose snapshot is older than a lot earned meanwhile,
// takes the soonest-expiring points first, the new lot's: at REPEATABLE READ the lots of
// the snapshot add up to less than the account's expiring points and the debit reads
// them again, locked.
func TestDebitsFindALotEarnedAfterTheirSnapshot(t *testing.T) {
	debits := []struct {
		name  string
		debit func(ctx context.Context, l *ledger.Ledger) error
	}{
		{"Spend", func(ctx context.Context, l *ledger.Ledger) error {
			_, err := l.Spend(ctx, ledger.SpendRequest{ID: "d1", User: "alice", Amount: 60})
			return err
		}},
		{"Capture part", func(ctx context.Context, l *ledger.Ledger) error {
			_, err := l.Capture(ctx, "h1", 60)
			return err
		}},
		{"Adjust down", func(ctx context.Context, l *ledger.Ledger) error {
			_, err := l.Adjust(ctx, ledger.AdjustRequest{ID: "d1", User: "alice", Delta: -60, Reason: "correction"})
			return err
		}},
	}
	for _, iso := range []sql.IsolationLevel{sql.LevelRepeatableRead, sql.LevelReadCommitted} {
		for _, d := range debits {
			t.Run(iso.String()+"/"+d.name, func(t *testing.T) {
				e := newEnv(t, testenv.MySQL(t))
				e.earn("e1", "alice", 100, 10*day)
				e.hold("h1", "alice", 70)
				tx, err := e.db.BeginTx(e.ctx, &sql.TxOptions{Isolation: iso})
				require.NoError(t, err)
				defer func() { _ = tx.Rollback() }()
				var n int
				require.NoError(t, tx.QueryRowContext(e.ctx, "SELECT COUNT(*) FROM ledger_lots").Scan(&n), "the snapshot")
				require.Equal(t, 1, n)

				e.earn("e2", "alice", 50, 5*day) // committed after the snapshot, expiring sooner
				require.NoError(t, d.debit(e.ctx, e.l.WithTx(tx)))
				require.NoError(t, tx.Commit())

				assert.Equal(t, map[string]int64{"e1": 90}, e.expiring("alice"), "e2 expires first, so it goes first")
				e.verify()
			})
		}
	}
}

// TestConcurrentDebitsEarnsAndSweeps: a user's earns, spends, partial captures, negative
// adjustments, refunds and sweeps, at the same time, each in a transaction of its own or
// several in a caller's transaction (at REPEATABLE READ with a snapshot older than its
// writes, or at READ COMMITTED) run again from the start on a deadlock as its owner would,
// end exactly where the successful operations say: every debit took its whole amount from
// the lots (there are always enough; refunds give back points that do not expire), the
// due lots expired or went first, nothing drifted.
func TestConcurrentDebitsEarnsAndSweeps(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		const start, due, base = 100000, 1000, 1000
		e.charge("c0", "alice", start)
		for i := range 20 {
			e.earn(fmt.Sprintf("due%02d", i), "alice", due/20, time.Hour)
		}
		e.earn("base", "alice", base, 30*day) // after all the others: it covers every debit
		e.clock.Advance(2 * time.Hour)
		var earned, debited, refunded atomic.Int64
		var mu sync.Mutex
		var errs []error
		fail := func(err error) {
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
		}
		add := func(sum *atomic.Int64, n int64) func(ledger.Receipt, error) {
			return func(_ ledger.Receipt, err error) {
				if err != nil {
					fail(err)
				} else {
					sum.Add(n)
				}
			}
		}
		// caller runs fn in a caller's transaction at iso that read ledger_lots first, and
		// runs it again after a deadlock; fn returns what it earned and debited.
		caller := func(iso sql.IsolationLevel, fn func(ctx context.Context, l *ledger.Ledger) (int64, int64, error)) {
			opts := &sql.TxOptions{Isolation: iso}
			if sqlutil.IsSQLite(e.db) {
				opts = nil
			}
			for {
				tx, err := e.db.BeginTx(e.ctx, opts)
				if err != nil {
					fail(err)
					return
				}
				var n int
				err = tx.QueryRowContext(e.ctx, "SELECT COUNT(*) FROM ledger_lots").Scan(&n)
				var ea, de int64
				if err == nil {
					ea, de, err = fn(e.ctx, e.l.WithTx(tx))
				}
				if err == nil {
					err = tx.Commit()
				}
				_ = tx.Rollback()
				switch {
				case err == nil:
					earned.Add(ea)
					debited.Add(de)
					return
				case !sqlutil.IsRetryable(err) && !sqlutil.IsSQLite(e.db): // SQLite: busy
					fail(fmt.Errorf("caller's transaction at %v: %w", iso, err))
					return
				}
			}
		}
		testkit.Together(24, func(i int) {
			for j := range 4 {
				id := fmt.Sprintf("%d-%d", i, j)
				earn := ledger.EarnRequest{ID: "e" + id, User: "alice", Amount: 40,
					ExpiresAt: e.clock.Now().Add(time.Duration(1+(i+j)%4) * day)}
				switch i % 6 {
				case 0:
					add(&earned, 40)(e.l.Earn(e.ctx, earn))
				case 1:
					add(&debited, 5)(e.spend("s"+id, "alice", 5))
				case 2:
					if _, err := e.l.Hold(e.ctx, "h"+id, "alice", 9, time.Hour); err != nil {
						fail(err)
						continue
					}
					add(&debited, 4)(e.l.Capture(e.ctx, "h"+id, 4))
				case 3:
					caller(sql.LevelRepeatableRead, func(ctx context.Context, l *ledger.Ledger) (int64, int64, error) {
						if _, err := l.Earn(ctx, earn); err != nil {
							return 0, 0, err
						}
						_, err := l.Spend(ctx, ledger.SpendRequest{ID: "s" + id, User: "alice", Amount: 6})
						return 40, 6, err
					})
				case 4:
					caller(sql.LevelReadCommitted, func(ctx context.Context, l *ledger.Ledger) (int64, int64, error) {
						if _, err := l.Spend(ctx, ledger.SpendRequest{ID: "s" + id, User: "alice", Amount: 6}); err != nil {
							return 0, 0, err
						}
						if _, err := l.Hold(ctx, "h"+id, "alice", 8, time.Hour); err != nil {
							return 0, 0, err
						}
						_, err := l.Capture(ctx, "h"+id, 3)
						return 0, 9, err
					})
				case 5:
					if _, err := e.l.Sweep(e.ctx); err != nil {
						fail(err)
					}
					add(&debited, 3)(e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a" + id, User: "alice", Delta: -3, Reason: "fix"}))
					if _, err := e.spend("s"+id, "alice", 5); err != nil {
						fail(err)
						continue
					}
					debited.Add(5)
					add(&refunded, 2)(e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r" + id, SpendID: "s" + id, Amount: 2}))
				}
			}
		})
		for _, err := range errs {
			t.Error(err)
		}
		e.sweep()
		expired := int64(0)
		for _, en := range e.history("alice") {
			if en.Type == ledger.TypeExpire {
				expired += en.Amount
			}
		}
		left := int64(0)
		for id, n := range e.expiring("alice") {
			require.NotContains(t, id, "due", "a due lot outlived the last sweep")
			left += n
		}
		require.Less(t, debited.Load(), int64(base))
		assert.Equal(t, debited.Load(), due-expired+base+earned.Load()-left, "what the debits took from the lots")
		assert.Equal(t, [2]int64{start + due + base + earned.Load() + refunded.Load() - debited.Load() - expired, 0}, e.balance("alice"))
		e.requireChain("alice")
		e.verify()
	})
}
