package ledger_test

import (
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/ledger"
)

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
