package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/ledger"
)

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
