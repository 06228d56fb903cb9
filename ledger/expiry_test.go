package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
)

const day = 24 * time.Hour

func (e *env) earn(id, user string, amount int64, expiresIn time.Duration) {
	e.t.Helper()
	_, err := e.l.Earn(e.ctx, ledger.EarnRequest{ID: id, User: user, Amount: amount, ExpiresAt: e.clock.Now().Add(expiresIn)})
	require.NoError(e.t, err)
}

// expiring returns the user's lots as EarnID → amount.
func (e *env) expiring(user string) map[string]int64 {
	e.t.Helper()
	lots, err := e.l.Expiring(e.ctx, user)
	require.NoError(e.t, err)
	m := map[string]int64{}
	for i, x := range lots {
		if i > 0 {
			require.False(e.t, x.ExpiresAt.Before(lots[i-1].ExpiresAt), "soonest first")
		}
		m[x.EarnID] = x.Amount
	}
	return m
}

func (e *env) sweep() int {
	e.t.Helper()
	n, err := e.l.Sweep(e.ctx)
	require.NoError(e.t, err)
	return n
}

// TestEarnedPointsExpire: spends use the soonest-expiring points first, and what is left
// of a lot at its expiry leaves the balance through an expire transfer.
func TestEarnedPointsExpire(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		start := e.clock.Now()
		e.charge("c1", "alice", 100)
		e.earn("e1", "alice", 50, 10*day)
		e.earn("e2", "alice", 70, 5*day)
		lots, err := e.l.Expiring(e.ctx, "alice")
		require.NoError(t, err)
		assert.Equal(t, []ledger.Expiry{{EarnID: "e2", Amount: 70, ExpiresAt: start.Add(5 * day)},
			{EarnID: "e1", Amount: 50, ExpiresAt: start.Add(10 * day)}}, lots)

		_, err = e.spend("s1", "alice", 60)
		require.NoError(t, err)
		assert.Equal(t, map[string]int64{"e2": 10, "e1": 50}, e.expiring("alice"))

		e.clock.Advance(5*day - time.Microsecond)
		assert.Zero(t, e.sweep(), "not due yet")
		e.clock.Advance(time.Microsecond)
		assert.Equal(t, 1, e.sweep())
		assert.Equal(t, [2]int64{150, 0}, e.balance("alice"))
		assert.Equal(t, map[string]int64{"e1": 50}, e.expiring("alice"))
		top := e.history("alice")[0]
		assert.Equal(t, ledger.Entry{ID: "e2", Type: ledger.TypeExpire, Amount: 10, Change: -10,
			Balance: ledger.Balance{Available: 150, Total: 150}, Time: e.clock.Now()}, top)

		_, err = e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a1", User: "alice", Delta: -20, Reason: "fix"})
		require.NoError(t, err)
		assert.Equal(t, map[string]int64{"e1": 30}, e.expiring("alice"), "a debit adjustment uses expiring points first")

		e.clock.Advance(10 * day)
		assert.Equal(t, 1, e.sweep())
		assert.Equal(t, [2]int64{100, 0}, e.balance("alice"), "the charged points never expire")
		assert.Empty(t, e.expiring("alice"))
		assert.Zero(t, e.sweep())
		assert.EqualValues(t, 40, system(t, e.verify())[ledger.AccountExpired])
		e.requireChain("alice")
	})
}

// TestExpiryWaitsForHeldPoints: held points do not expire; they expire when the hold gives
// them back, and a capture uses the overdue points first.
func TestExpiryWaitsForHeldPoints(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.earn("e1", "alice", 50, day)
		_, err := e.l.Hold(e.ctx, "h1", "alice", 40, 30*day)
		require.NoError(t, err)
		e.earn("e2", "bob", 50, day)
		_, err = e.l.Hold(e.ctx, "h2", "bob", 50, 30*day)
		require.NoError(t, err)

		e.clock.Advance(day)
		assert.Equal(t, 1, e.sweep(), "alice's 10 available points expire, bob has none available")
		assert.Equal(t, [2]int64{0, 40}, e.balance("alice"))
		assert.Equal(t, map[string]int64{"e1": 40}, e.expiring("alice"))
		assert.Equal(t, map[string]int64{"e2": 50}, e.expiring("bob"))

		_, err = e.l.Void(e.ctx, "h1")
		require.NoError(t, err)
		_, err = e.l.Capture(e.ctx, "h2", 30)
		require.NoError(t, err)
		assert.Equal(t, map[string]int64{"e2": 20}, e.expiring("bob"), "the capture used the overdue lot")
		assert.Equal(t, [2]int64{20, 0}, e.balance("bob"))

		assert.Equal(t, 2, e.sweep())
		assert.Equal(t, [2]int64{0, 0}, e.balance("alice"))
		assert.Equal(t, [2]int64{0, 0}, e.balance("bob"))
		assert.Equal(t, []ledger.EntryType{"expire", "void", "expire", "hold", "earn"}, types(e.history("alice")))
		assert.EqualValues(t, 70, system(t, e.verify())[ledger.AccountExpired])
		e.requireChain("alice")
		e.requireChain("bob")
	})
}

// TestSweepExpiresOldestFirst: when only part of a user's due points are available, the
// oldest lot takes them.
func TestSweepExpiresOldestFirst(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.earn("old", "carol", 30, day)
		e.earn("new", "carol", 30, 2*day)
		_, err := e.l.Hold(e.ctx, "h", "carol", 40, 30*day)
		require.NoError(t, err)
		e.clock.Advance(3 * day)
		assert.Equal(t, 1, e.sweep())
		assert.Equal(t, map[string]int64{"old": 10, "new": 30}, e.expiring("carol"))
		e.verify()
	})
}

// TestSweepPagesPastBlockedLots: lots that cannot expire (held points) do not stop the
// sweep from reaching the lots after them.
func TestSweepPagesPastBlockedLots(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		l := testkit.Must(ledger.New(e.db, ledger.WithClock(e.clock.Now), ledger.WithSweepBatch(2)))(t)
		for _, u := range []string{"u1", "u2", "u3"} {
			e.earn("e-"+u, u, 10, day)
			_, err := e.l.Hold(e.ctx, "h-"+u, u, 10, 30*day)
			require.NoError(t, err)
		}
		e.clock.Advance(time.Minute)
		e.earn("e-u4", "u4", 10, day)
		e.earn("e-u5", "u5", 10, day)
		e.clock.Advance(2 * day)
		n, err := l.Sweep(e.ctx)
		require.NoError(t, err)
		assert.Equal(t, 2, n, "u4 and u5, after three blocked lots")
		assert.Equal(t, [2]int64{0, 0}, e.balance("u5"))
		e.verify()
	})
}

func TestEarnExpiryValidation(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		for _, at := range []time.Time{e.clock.Now(), e.clock.Now().Add(-time.Second), e.clock.Now().Add(101 * 365 * day)} {
			_, err := e.l.Earn(e.ctx, ledger.EarnRequest{ID: "e1", User: "alice", Amount: 1, ExpiresAt: at})
			assert.Equal(t, "ExpiresAt", requireAs[*ledger.ValidationError](t, err, ledger.ErrInvalid).Field)
		}
		assert.Equal(t, [2]int64{0, 0}, e.balance("alice"))
	})
}

// TestEarnRepeatedAfterItsExpiry repeats an expiring Earn once its expiry has passed (a
// redelivered reward event, a retry a week later): the same request returns the original
// receipt and applies nothing, as every other repeated operation does, even though it could
// no longer be applied; other content under the ID fails with ErrIDReused; a new earn that
// expires in the past is still refused.
func TestEarnRepeatedAfterItsExpiry(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		exp := e.clock.Now().Add(day)
		req := ledger.EarnRequest{ID: "e1", User: "alice", Amount: 100, Reference: "order-1", ExpiresAt: exp}
		first, err := e.l.Earn(e.ctx, req)
		require.NoError(t, err)

		for _, wait := range []time.Duration{day, 6 * day} { // at the expiry, then a week after the earn
			e.clock.Advance(wait)
			again, err := e.l.Earn(e.ctx, req)
			require.NoError(t, err, "repeated at %s", e.clock.Now())
			assert.Equal(t, first, again, "the same request returns the original receipt")

			other := req
			other.Amount = 101
			_, err = e.l.Earn(e.ctx, other)
			assert.Equal(t, string(ledger.TypeEarn), requireAs[*ledger.IDReusedError](t, err, ledger.ErrIDReused).Kind)
		}

		_, err = e.l.Earn(e.ctx, ledger.EarnRequest{ID: "e2", User: "alice", Amount: 1, ExpiresAt: exp})
		assert.Equal(t, "ExpiresAt", requireAs[*ledger.ValidationError](t, err, ledger.ErrInvalid).Field,
			"a new earn expiring in the past is refused")
		assert.Equal(t, [2]int64{100, 0}, e.balance("alice"), "applied once, not swept yet")
		assert.Len(t, e.history("alice"), 1)
		e.sweep()
		assert.Equal(t, [2]int64{0, 0}, e.balance("alice"))
		e.verify()
	})
}
