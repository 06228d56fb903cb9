package ledger_test

import (
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/ledger"
)

// workload leaves alice with 730 available and a pending hold of 100, bob with 40 due to
// expire.
func workload(t *testing.T, e *env) {
	e.charge("c1", "alice", 1000)
	_, err := e.spend("s1", "alice", 200)
	require.NoError(t, err)
	_, err = e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r1", SpendID: "s1", Amount: 50})
	require.NoError(t, err)
	e.hold("h1", "alice", 100)
	e.hold("h2", "alice", 80)
	_, err = e.l.Capture(e.ctx, "h2", 20)
	require.NoError(t, err)
	e.earn("e1", "bob", 40, time.Hour)
}

func (e *env) exec(query string, args ...any) {
	e.t.Helper()
	_, err := e.db.ExecContext(e.ctx, query, args...)
	require.NoError(e.t, err)
}

// drift runs Verify, requires it to report drift, and returns it.
func (e *env) drift() []ledger.Drift {
	e.t.Helper()
	r, err := e.l.Verify(e.ctx)
	de := requireAs[*ledger.DriftError](e.t, err, ledger.ErrDrift)
	require.False(e.t, r.OK())
	require.Equal(e.t, r.Drift, de.Drift)
	return r.Drift
}

func TestVerifyReportsASoundLedger(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		workload(t, e)
		r := e.verify()
		assert.Equal(t, map[ledger.Account]int64{
			ledger.AccountCharged: -1000, ledger.AccountRedeemed: 170, ledger.AccountRewarded: -40,
		}, system(t, r))
		r.System, r.Sum = nil, nil
		assert.Equal(t, ledger.Report{Users: 2, Transfers: 8, OpenHolds: 1}, r)
		e.requireChain("alice")
		e.requireChain("bob")
	})
}

// TestVerifyFindsDrift corrupts the stored state directly, one way at a time, and checks
// that Verify names the account and what drifted.
func TestVerifyFindsDrift(t *testing.T) {
	cases := []struct {
		name    string
		corrupt string
		want    []ledger.Drift
	}{
		{"available", "UPDATE ledger_accounts SET available = available + 5 WHERE user_id = 'alice'", []ledger.Drift{
			{Check: "zero sum", Stored: 5},
			{Account: "user:alice", Check: "available", Stored: 735, Expected: 730},
		}},
		{"held", "UPDATE ledger_accounts SET held = held - 1 WHERE user_id = 'alice'", []ledger.Drift{
			{Check: "zero sum", Stored: -1},
			{Account: "held:alice", Check: "held", Stored: 99, Expected: 100},
			{Account: "held:alice", Check: "open holds", Stored: 99, Expected: 100},
		}},
		{"journal amount", "UPDATE ledger_transfers SET amount = amount + 7 WHERE id = 'c1'", []ledger.Drift{
			{Check: "zero sum", Stored: -7},
			{Account: "user:alice", Check: "available", Stored: 730, Expected: 737},
		}},
		{"lost hold", "UPDATE ledger_holds SET state = 'voided' WHERE id = 'h1'", []ledger.Drift{
			{Account: "held:alice", Check: "open holds", Stored: 100, Expected: 0},
		}},
		{"expiring", "UPDATE ledger_lots SET remaining = 39 WHERE id = 'e1'", []ledger.Drift{
			{Account: "user:bob", Check: "expiring", Stored: 40, Expected: 39},
		}},
		{"refunded", "UPDATE ledger_transfers SET refunded = 0 WHERE id = 's1'", []ledger.Drift{
			{Account: "user:alice", Check: "refunds", Stored: 0, Expected: 50, Detail: "spend s1"},
		}},
		{"missing account", "DELETE FROM ledger_accounts WHERE user_id = 'bob'", []ledger.Drift{
			{Check: "zero sum", Stored: -40},
			{Account: "user:bob", Check: "available", Stored: 0, Expected: 40},
			{Account: "user:bob", Check: "expiring", Stored: 0, Expected: 40},
		}},
		{"hold without an account", "INSERT INTO ledger_holds (id, user_id, amount, state, captured, deadline, created_at, available_after, held_after) " +
			"VALUES ('h9', 'carol', 5, 'pending', 0, '2030-01-01 00:00:00', '2026-01-01 00:00:00', 0, 5)", []ledger.Drift{
			{Account: "held:carol", Check: "open holds", Stored: 0, Expected: 5},
		}},
		{"lot without an account", "INSERT INTO ledger_lots (id, user_id, remaining, expires_at) VALUES ('e9', 'carol', 6, '2030-01-01 00:00:00')", []ledger.Drift{
			{Account: "user:carol", Check: "expiring", Stored: 0, Expected: 6},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			each(t, func(t *testing.T, e *env) {
				workload(t, e)
				e.exec(c.corrupt)
				assert.Equal(t, c.want, e.drift())
			})
		})
	}
}

// TestVerifyHugeConsistentLedger: a consistent ledger whose lifetime movements pass int64
// — a user charged and spending ledger.MaxAmount 9,300 times, so @charged, @redeemed and
// the user's lifetime credits all exceed 9.2e18 while the user holds 5 points — verifies
// clean on both dialects (SQLite's sum() used to fail with "integer overflow" and the
// system balances were int64), with the system balances exact; drift is still found.
func TestVerifyHugeConsistentLedger(t *testing.T) {
	const pairs = 9_300
	each(t, func(t *testing.T, e *env) {
		e.charge("seed", "whale", 5) // the account row and a real journal row
		e.insertPairs("whale", pairs)

		r := e.verify()
		lifetime := new(big.Int).Mul(big.NewInt(pairs), big.NewInt(ledger.MaxAmount))
		require.False(t, lifetime.IsInt64(), "the workload passes int64")
		charged := new(big.Int).Neg(new(big.Int).Add(lifetime, big.NewInt(5)))
		assert.Zero(t, charged.Cmp(r.System[ledger.AccountCharged]), "@charged = %v, want %v", r.System[ledger.AccountCharged], charged)
		assert.Zero(t, lifetime.Cmp(r.System[ledger.AccountRedeemed]), "@redeemed = %v, want %v", r.System[ledger.AccountRedeemed], lifetime)
		assert.EqualValues(t, 1+2*pairs, r.Transfers)
		assert.Equal(t, [2]int64{5, 0}, e.balance("whale"))

		e.exec("UPDATE ledger_accounts SET available = available + 1 WHERE user_id = 'whale'")
		assert.Equal(t, []ledger.Drift{
			{Check: "zero sum", Stored: 1},
			{Account: "user:whale", Check: "available", Stored: 6, Expected: 5},
		}, e.drift())
	})
}

// insertPairs writes n charge/spend pairs of ledger.MaxAmount for user straight into the
// journal, in batches: each pair nets to zero, so the ledger stays consistent.
func (e *env) insertPairs(user string, n int) {
	e.t.Helper()
	const batch = 500
	now := e.clock.Now()
	for start := 0; start < n; start += batch {
		var rows []string
		var args []any
		for i := start; i < min(n, start+batch); i++ {
			for _, side := range []struct {
				id       string
				kind     ledger.EntryType
				src, dst ledger.Account
			}{
				{fmt.Sprint("c-", i), ledger.TypeCharge, ledger.AccountCharged, ledger.UserAccount(user)},
				{fmt.Sprint("s-", i), ledger.TypeSpend, ledger.UserAccount(user), ledger.AccountRedeemed},
			} {
				rows = append(rows, "(?, ?, ?, ?, ?, ?, 0, 0, NULL, '', '', 0, NULL, ?)")
				args = append(args, side.id, string(side.kind), user, string(side.src), string(side.dst), int64(ledger.MaxAmount), now)
			}
		}
		e.exec("INSERT INTO ledger_transfers (id, kind, user_id, src, dst, amount, available_after, held_after, "+
			"parent_id, reference, reason, refunded, expires_at, created_at) VALUES "+strings.Join(rows, ", "), args...)
	}
}
