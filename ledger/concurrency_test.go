package ledger_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
)

// TestConcurrentSpendsNeverOversell: 200 goroutines spend 1 point each from 100.
func TestConcurrentSpendsNeverOversell(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("c1", "alice", 100)
		var ok, short atomic.Int64
		errs := make(chan error, 200)
		testkit.Together(200, func(i int) {
			r, err := e.spend(fmt.Sprint("s", i), "alice", 1)
			switch {
			case err == nil && r.Balance.Available >= 0:
				ok.Add(1)
			case errors.Is(err, ledger.ErrInsufficientPoints):
				short.Add(1)
			default:
				errs <- fmt.Errorf("spend %d: %+v, %w", i, r, err)
			}
		})
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		assert.EqualValues(t, 100, ok.Load())
		assert.EqualValues(t, 100, short.Load())
		assert.Equal(t, [2]int64{0, 0}, e.balance("alice"))
		assert.Len(t, e.history("alice"), 101)
		e.requireChain("alice")
		assert.EqualValues(t, 100, system(t, e.verify())[ledger.AccountRedeemed])
	})
}

// TestHoldsAndSpendsRace: holds, captures, voids and spends on one balance at once never
// take more than it has, and end exactly where the successful operations say.
func TestHoldsAndSpendsRace(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		const start = 1000
		e.charge("c1", "alice", start)
		var spent, captured, pending, short atomic.Int64
		errs := make(chan error, 300)
		check := func(r ledger.Receipt, err error, what string, i int) bool {
			if errors.Is(err, ledger.ErrInsufficientPoints) {
				short.Add(1)
			} else if err != nil {
				errs <- fmt.Errorf("%s %d: %w", what, i, err)
			}
			if err == nil && (r.Balance.Available < 0 || r.Balance.Held < 0) {
				errs <- fmt.Errorf("%s %d: negative balance %+v", what, i, r.Balance)
			}
			return err == nil
		}
		testkit.Together(150, func(i int) {
			switch i % 3 {
			case 0:
				r, err := e.spend(fmt.Sprint("s", i), "alice", 13)
				if check(r, err, "spend", i) {
					spent.Add(13)
				}
			case 1:
				r, err := e.l.Hold(e.ctx, fmt.Sprint("h", i), "alice", 17, time.Hour)
				if check(r, err, "hold", i) {
					pending.Add(17)
				}
			case 2:
				id := fmt.Sprint("h", i)
				r, err := e.l.Hold(e.ctx, id, "alice", 19, time.Hour)
				if !check(r, err, "hold", i) {
					return
				}
				if i%2 == 0 {
					r, err = e.l.Capture(e.ctx, id, 11)
					if check(r, err, "capture", i) {
						captured.Add(11)
					}
				} else {
					r, err = e.l.Void(e.ctx, id)
					check(r, err, "void", i)
				}
			}
		})
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		assert.Positive(t, spent.Load())
		assert.Positive(t, short.Load(), "the load asks for more than there is")
		assert.Equal(t, [2]int64{start - spent.Load() - captured.Load() - pending.Load(), pending.Load()}, e.balance("alice"))
		rep := e.verify()
		assert.Equal(t, spent.Load()+captured.Load(), system(t, rep)[ledger.AccountRedeemed])
		assert.Equal(t, pending.Load()/17, rep.OpenHolds)
		e.requireChain("alice")
	})
}

// TestRepeatedIDsApplyOnce: the same request sent by many goroutines at once applies
// once, and every one of them gets the same receipt.
func TestRepeatedIDsApplyOnce(t *testing.T) {
	const n = 50
	same := func(t *testing.T, do func() (ledger.Receipt, error)) ledger.Receipt {
		t.Helper()
		receipts := make([]ledger.Receipt, n)
		errs := make([]error, n)
		testkit.Together(n, func(i int) { receipts[i], errs[i] = do() })
		for i := range n {
			require.NoError(t, errs[i])
			require.Equal(t, receipts[0], receipts[i])
		}
		return receipts[0]
	}
	each(t, func(t *testing.T, e *env) {
		same(t, func() (ledger.Receipt, error) {
			return e.l.Charge(e.ctx, ledger.ChargeRequest{ID: "c1", User: "alice", Amount: 100})
		})
		assert.Equal(t, [2]int64{100, 0}, e.balance("alice"), "one charge on a new account")

		same(t, func() (ledger.Receipt, error) { return e.spend("s1", "alice", 10) })
		assert.Equal(t, [2]int64{90, 0}, e.balance("alice"))

		same(t, func() (ledger.Receipt, error) {
			return e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r1", SpendID: "s1", Amount: 4})
		})
		assert.Equal(t, [2]int64{94, 0}, e.balance("alice"))

		same(t, func() (ledger.Receipt, error) { return e.l.Hold(e.ctx, "h1", "alice", 30, time.Hour) })
		assert.Equal(t, [2]int64{64, 30}, e.balance("alice"))

		r := same(t, func() (ledger.Receipt, error) { return e.l.Capture(e.ctx, "h1", 20) })
		assert.Equal(t, ledger.TypeCapture, r.Type)
		assert.Equal(t, [2]int64{74, 0}, e.balance("alice"))
		assert.Len(t, e.history("alice"), 6, "charge, spend, refund, hold, capture, release")
		e.verify()
	})
}

// TestCaptureAndVoidRace: of many Captures and Voids of one hold, one kind wins; the
// others get its receipt or a HoldError naming it.
func TestCaptureAndVoidRace(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("c1", "alice", 100)
		e.hold("h1", "alice", 60)
		var captures, voids, refused atomic.Int64
		errs := make(chan error, 40)
		testkit.Together(40, func(i int) {
			var r ledger.Receipt
			var err error
			if i%2 == 0 {
				r, err = e.l.Capture(e.ctx, "h1", 25)
			} else {
				r, err = e.l.Void(e.ctx, "h1")
			}
			switch {
			case err == nil && r.Type == ledger.TypeCapture:
				captures.Add(1)
			case err == nil && r.Type == ledger.TypeVoid:
				voids.Add(1)
			case errors.Is(err, ledger.ErrHoldCaptured), errors.Is(err, ledger.ErrHoldVoided):
				refused.Add(1)
			default:
				errs <- fmt.Errorf("%d: %+v %w", i, r, err)
			}
		})
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		info, err := e.l.LookupHold(e.ctx, "h1")
		require.NoError(t, err)
		if info.State == ledger.HoldCaptured {
			assert.EqualValues(t, 20, captures.Load())
			assert.Zero(t, voids.Load())
			assert.Equal(t, [2]int64{75, 0}, e.balance("alice"))
		} else {
			require.Equal(t, ledger.HoldVoided, info.State)
			assert.EqualValues(t, 20, voids.Load())
			assert.Zero(t, captures.Load())
			assert.Equal(t, [2]int64{100, 0}, e.balance("alice"))
		}
		assert.EqualValues(t, 20, refused.Load())
		e.verify()
		e.requireChain("alice")
	})
}

// TestConcurrentRefundsNeverExceedTheSpend: 60 refunds of 1 point race for a spend of 30.
func TestConcurrentRefundsNeverExceedTheSpend(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("c1", "alice", 100)
		_, err := e.spend("s1", "alice", 30)
		require.NoError(t, err)
		var ok, over atomic.Int64
		testkit.Together(60, func(i int) {
			_, err := e.l.Refund(e.ctx, ledger.RefundRequest{ID: fmt.Sprint("r", i), SpendID: "s1", Amount: 1})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ledger.ErrRefundExceedsSpend):
				over.Add(1)
			default:
				t.Error(err)
			}
		})
		assert.EqualValues(t, 30, ok.Load())
		assert.EqualValues(t, 30, over.Load())
		assert.Equal(t, [2]int64{100, 0}, e.balance("alice"))
		e.verify()
	})
}

// TestConcurrentSweepers: sweepers racing each other and captures resolve every hold once.
func TestConcurrentSweepers(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("c1", "alice", 1000)
		for i := range 20 {
			_, err := e.l.Hold(e.ctx, fmt.Sprint("h", i), "alice", 10, time.Minute)
			require.NoError(t, err)
			e.earn(fmt.Sprint("e", i), fmt.Sprint("u", i), 5, time.Minute)
		}
		e.clock.Advance(time.Minute)
		var resolved atomic.Int64
		testkit.Together(8, func(int) {
			n, err := e.l.Sweep(e.ctx)
			assert.NoError(t, err)
			resolved.Add(int64(n))
		})
		assert.EqualValues(t, 40, resolved.Load(), "20 holds and 20 lots, each once")
		assert.Equal(t, [2]int64{1000, 0}, e.balance("alice"))
		assert.EqualValues(t, 100, system(t, e.verify())[ledger.AccountExpired])
		e.requireChain("alice")
	})
}

// TestSpendLocksOnlyItsUsersLots: a spend in progress holds its user's lots and nothing
// beside them. A locking read of the user's range of ledger_lots_user would also lock the
// gap up to the next user's first lot, where a user whose ID sorts between the two inserts
// the lot of an expiring earn: that earn would wait until the spend's transaction ended.
func TestSpendLocksOnlyItsUsersLots(t *testing.T) {
	e := newEnv(t, testenv.MySQL(t))
	e.earn("earn-u1", "u1", 100, day)
	e.earn("earn-u3", "u3", 100, day)
	tx := e.inTx(func(l *ledger.Ledger) {
		_, err := l.Spend(e.ctx, ledger.SpendRequest{ID: "s1", User: "u1", Amount: 10})
		require.NoError(t, err)
	})
	err := e.probe(func(ctx context.Context, l *ledger.Ledger) error {
		_, err := l.Earn(ctx, ledger.EarnRequest{ID: "earn-u2", User: "u2", Amount: 100, ExpiresAt: e.clock.Now().Add(day)})
		return err
	})
	require.NoError(t, err, "u2's earn waited for u1's spend")

	require.NoError(t, tx.Commit())
	assert.Equal(t, map[string]int64{"earn-u1": 90}, e.expiring("u1"))
	assert.Equal(t, map[string]int64{"earn-u2": 100}, e.expiring("u2"))
	e.verify()
}

// inTx runs fn on e's ledger inside a transaction that stays open until the test ends,
// and returns the transaction.
func (e *env) inTx(fn func(l *ledger.Ledger)) bun.Tx {
	e.t.Helper()
	tx, err := e.db.BeginTx(e.ctx, nil)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = tx.Rollback() })
	fn(e.l.WithTx(tx))
	return tx
}

// probe runs fn on e's ledger over a connection of its own that waits at most one second
// for a lock: an error says fn waited for a lock held elsewhere.
func (e *env) probe(fn func(ctx context.Context, l *ledger.Ledger) error) error {
	e.t.Helper()
	conn, err := e.db.Conn(e.ctx)
	require.NoError(e.t, err)
	defer func() { _ = conn.Close() }()
	_, err = conn.ExecContext(e.ctx, "SET SESSION innodb_lock_wait_timeout = 1")
	require.NoError(e.t, err)
	return fn(e.ctx, e.l.WithTx(conn))
}

// pendingHolds inserts n pending holds of user "crowd", IDs h000000, h000002, …, all due
// at deadline, and brings the statistics of ledger_holds up to date, as after a busy sale.
// They have no account nor journal: Verify reports them as drift.
func (e *env) pendingHolds(n int, deadline time.Time) {
	e.t.Helper()
	now := e.clock.Now()
	for i := range n {
		e.exec("INSERT INTO ledger_holds (id, user_id, amount, state, captured, deadline, created_at, available_after, held_after) "+
			"VALUES (?, 'crowd', 1, ?, 0, ?, ?, 0, 0)", fmt.Sprintf("h%06d", 2*i), ledger.HoldPending, deadline, now)
	}
	e.exec("ANALYZE TABLE ledger_holds")
}

// TestResolveLocksOnlyItsHold: capturing, voiding or expiring a hold locks its own row
// of ledger_holds and no gap beside it, so another user's hold placed meanwhile does not
// wait. Its conditional update (WHERE id = ? AND state = ?) changes the state, a column of
// ledger_holds_due (state, deadline); on a young table with a few holds MariaDB read the
// row through that index (EXPLAIN: key ledger_holds_due, "Using buffer"), next-key locking
// every pending hold and the end of the index, so every new hold waited for the caller's
// transaction. With 400 pending holds analysed it chose the primary key.
func TestResolveLocksOnlyItsHold(t *testing.T) {
	resolves := []struct {
		name    string
		resolve func(e *env, l *ledger.Ledger) error
	}{
		{"Capture", func(e *env, l *ledger.Ledger) error {
			_, err := l.Capture(e.ctx, "h000201", 10)
			return err
		}},
		{"Void", func(e *env, l *ledger.Ledger) error {
			_, err := l.Void(e.ctx, "h000201")
			return err
		}},
		{"Sweep", func(e *env, l *ledger.Ledger) error {
			e.clock.Advance(16 * time.Minute) // past the hold's deadline, before the crowd's
			n, err := l.Sweep(e.ctx)
			require.Equal(e.t, 1, n)
			return err
		}},
	}
	for _, crowd := range []int{0, 400} {
		for _, tc := range resolves {
			t.Run(fmt.Sprintf("%s/%d other holds", tc.name, crowd), func(t *testing.T) {
				e := newEnv(t, testenv.MySQL(t))
				e.charge("c-alice", "alice", 100)
				e.charge("c-bob", "bob", 100)
				e.hold("h000201", "alice", 30)
				if crowd > 0 {
					e.pendingHolds(crowd, e.clock.Now().Add(time.Hour))
				}

				tx := e.inTx(func(l *ledger.Ledger) { require.NoError(t, tc.resolve(e, l)) })
				err := e.probe(func(ctx context.Context, l *ledger.Ledger) error {
					_, err := l.Hold(ctx, "h000203", "bob", 10, 15*time.Minute)
					return err
				})
				require.NoError(t, err, "bob's hold waited for alice's")
				require.NoError(t, tx.Commit())
				e.exec("DELETE FROM ledger_holds WHERE user_id = 'crowd'") // no account, no journal
				e.verify()
			})
		}
	}
}

// TestTransfersLockOnlyTheirSpend: a refund, and a repeated spend answered from the
// journal, in a caller's transaction lock the spend's row of ledger_transfers and no gap
// beside it, so another user's transfer with an ID just below the spend's does not wait
// for the caller to commit. A locking read through ledger_transfers_id, a unique index of
// a NULLable column, takes InnoDB's next-key lock: the gap below the ID too.
func TestTransfersLockOnlyTheirSpend(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   func(e *env, l *ledger.Ledger)
	}{
		{"Refund", func(e *env, l *ledger.Ledger) {
			_, err := l.Refund(e.ctx, ledger.RefundRequest{ID: "r1", SpendID: "s0200", Amount: 1})
			require.NoError(e.t, err)
		}},
		{"Refund of a capture", func(e *env, l *ledger.Ledger) {
			_, err := l.Refund(e.ctx, ledger.RefundRequest{ID: "r1", SpendID: "s0400", Amount: 1})
			require.NoError(e.t, err)
		}},
		{"Spend repeated", func(e *env, l *ledger.Ledger) {
			r, err := l.Spend(e.ctx, ledger.SpendRequest{ID: "s0200", User: "alice", Amount: 2})
			require.NoError(e.t, err)
			require.EqualValues(e.t, 1000-4, r.Balance.Available, "the original receipt")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, testenv.MySQL(t))
			e.charge("c-alice", "alice", 1000)
			e.charge("c-bob", "bob", 1000)
			_, err := e.spend("s0100", "alice", 2)
			require.NoError(t, err)
			_, err = e.spend("s0200", "alice", 2)
			require.NoError(t, err)
			e.hold("s0400", "alice", 10)
			_, err = e.l.Capture(e.ctx, "s0400", 5)
			require.NoError(t, err)

			tx := e.inTx(func(l *ledger.Ledger) { tc.op(e, l) })
			for _, id := range []string{"s0150", "s0300"} { // just below each spend
				err := e.probe(func(ctx context.Context, l *ledger.Ledger) error {
					_, err := l.Spend(ctx, ledger.SpendRequest{ID: id, User: "bob", Amount: 1})
					return err
				})
				require.NoError(t, err, "bob's spend %s waited for alice's transfer", id)
			}
			require.NoError(t, tx.Commit())
			e.verify()
		})
	}
}

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
		// runs it again after a deadlock or lock wait timeout; fn returns what it earned and
		// debited.
		caller := func(iso sql.IsolationLevel, fn func(ctx context.Context, l *ledger.Ledger) (int64, int64, error)) {
			opts := &sql.TxOptions{Isolation: iso}
			if sqlutil.IsSQLite(e.db) {
				opts = nil
			}
			for attempt := 1; ; attempt++ {
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
				case !sqlutil.IsRetryable(err) || attempt == 20:
					fail(fmt.Errorf("caller's transaction at %v, attempt %d: %w", iso, attempt, err))
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

// TestRefundInAStaleSnapshot: a refund in a caller's transaction whose snapshot is older
// than what happened to the spend meanwhile sees the latest of it: the refunds of an older
// spend committed since (the limit holds), and a spend committed since (found, through the
// index, as the snapshot has no seq for it).
func TestRefundInAStaleSnapshot(t *testing.T) {
	e := newEnv(t, testenv.MySQL(t))
	e.charge("c1", "alice", 100)
	_, err := e.spend("s1", "alice", 20)
	require.NoError(t, err)
	tx, err := e.db.BeginTx(e.ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	var n int
	require.NoError(t, tx.QueryRowContext(e.ctx, "SELECT COUNT(*) FROM ledger_transfers").Scan(&n), "the snapshot")

	_, err = e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r0", SpendID: "s1", Amount: 15})
	require.NoError(t, err)
	_, err = e.spend("s2", "alice", 10)
	require.NoError(t, err)
	l := e.l.WithTx(tx)
	_, err = l.Refund(e.ctx, ledger.RefundRequest{ID: "r1", SpendID: "s1", Amount: 10})
	var rerr *ledger.RefundError
	require.ErrorAs(t, err, &rerr)
	assert.Equal(t, ledger.RefundError{SpendID: "s1", Spent: 20, Refunded: 15, Requested: 10}, *rerr)
	_, err = l.Refund(e.ctx, ledger.RefundRequest{ID: "r2", SpendID: "s2", Amount: 5})
	require.NoError(t, err)
	require.NoError(t, tx.Commit())

	assert.Equal(t, [2]int64{90, 0}, e.balance("alice"))
	e.verify()
}
