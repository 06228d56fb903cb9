package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/ledger"
)

func TestChargeEarnSpend(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		now := e.clock.Now()
		r, err := e.l.Charge(e.ctx, ledger.ChargeRequest{ID: "c1", User: "alice", Amount: 1000, Reference: "pay-1"})
		require.NoError(t, err)
		assert.Equal(t, rec("c1", ledger.TypeCharge, "alice", 1000, 1000, 0, now), r)

		e.clock.Advance(time.Second)
		r, err = e.l.Spend(e.ctx, ledger.SpendRequest{ID: "s1", User: "alice", Amount: 300, Reference: "order-1"})
		require.NoError(t, err)
		assert.Equal(t, rec("s1", ledger.TypeSpend, "alice", 300, 700, 0, now.Add(time.Second)), r)

		r, err = e.l.Earn(e.ctx, ledger.EarnRequest{ID: "e1", User: "alice", Amount: 50, Reference: "order-1"})
		require.NoError(t, err)
		assert.Equal(t, rec("e1", ledger.TypeEarn, "alice", 50, 750, 0, now.Add(time.Second)), r)

		assert.Equal(t, [2]int64{750, 0}, e.balance("alice"))
		assert.Equal(t, [2]int64{0, 0}, e.balance("bob"), "a user without points has a zero balance")

		rep := e.verify()
		assert.Equal(t, map[ledger.Account]int64{
			ledger.AccountCharged: -1000, ledger.AccountRewarded: -50, ledger.AccountRedeemed: 300,
		}, system(t, rep))
		assert.EqualValues(t, 1, rep.Users)
		assert.EqualValues(t, 3, rep.Transfers)
	})
}

// TestIdempotency repeats every operation with the same ID: the same content returns the
// original receipt and applies nothing; other content fails with ErrIDReused.
func TestIdempotency(t *testing.T) {
	expires := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		kind ledger.EntryType
		// do runs the operation; changed alters its content.
		do func(e *env, changed bool) (ledger.Receipt, error)
	}{
		{"charge", ledger.TypeCharge, func(e *env, changed bool) (ledger.Receipt, error) {
			return e.l.Charge(e.ctx, ledger.ChargeRequest{ID: "x", User: "alice", Amount: 10, Reference: pick(changed, "a", "b")})
		}},
		{"earn", ledger.TypeEarn, func(e *env, changed bool) (ledger.Receipt, error) {
			exp := expires
			if changed {
				exp = exp.Add(time.Microsecond)
			}
			return e.l.Earn(e.ctx, ledger.EarnRequest{ID: "x", User: "alice", Amount: 10, ExpiresAt: exp})
		}},
		{"spend", ledger.TypeSpend, func(e *env, changed bool) (ledger.Receipt, error) {
			return e.l.Spend(e.ctx, ledger.SpendRequest{ID: "x", User: pick(changed, "alice", "bob"), Amount: 10})
		}},
		{"refund", ledger.TypeRefund, func(e *env, changed bool) (ledger.Receipt, error) {
			return e.l.Refund(e.ctx, ledger.RefundRequest{ID: "x", SpendID: "paid", Amount: map[bool]int64{false: 10, true: 11}[changed]})
		}},
		{"adjust up", ledger.TypeAdjust, func(e *env, changed bool) (ledger.Receipt, error) {
			return e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "x", User: "alice", Delta: 10, Reason: pick(changed, "bonus", "fix")})
		}},
		{"adjust down", ledger.TypeAdjust, func(e *env, changed bool) (ledger.Receipt, error) {
			return e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "x", User: "alice", Delta: map[bool]int64{false: -10, true: 10}[changed], Reason: "fix"})
		}},
		{"hold", ledger.TypeHold, func(e *env, changed bool) (ledger.Receipt, error) {
			return e.l.Hold(e.ctx, "x", "alice", 10, map[bool]time.Duration{false: time.Minute, true: time.Hour}[changed])
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			each(t, func(t *testing.T, e *env) {
				e.charge("fund-a", "alice", 1000)
				e.charge("fund-b", "bob", 1000)
				_, err := e.spend("paid", "alice", 100)
				require.NoError(t, err)
				first, err := c.do(e, false)
				require.NoError(t, err)
				assert.Equal(t, c.kind, first.Type)
				before, entries := e.balance("alice"), len(e.history("alice"))

				e.clock.Advance(time.Minute)
				again, err := c.do(e, false)
				require.NoError(t, err)
				assert.Equal(t, first, again, "the same request returns the original receipt")

				_, err = c.do(e, true)
				reused := requireAs[*ledger.IDReusedError](t, err, ledger.ErrIDReused)
				assert.Equal(t, "x", reused.Key)
				assert.Equal(t, string(c.kind), reused.Kind)

				assert.Equal(t, before, e.balance("alice"), "applied once")
				assert.Len(t, e.history("alice"), entries)
				e.verify()
			})
		})
	}
}

func pick(changed bool, same, other string) string {
	if changed {
		return other
	}
	return same
}

func TestIDsShareOneNamespace(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("x", "alice", 100)
		_, err := e.spend("x", "alice", 100)
		assert.Equal(t, string(ledger.TypeCharge), requireAs[*ledger.IDReusedError](t, err, ledger.ErrIDReused).Kind)
		_, err = e.l.Hold(e.ctx, "x", "alice", 100, time.Minute)
		require.ErrorIs(t, err, ledger.ErrIDReused)
		_, err = e.l.Refund(e.ctx, ledger.RefundRequest{ID: "x", SpendID: "x", Amount: 1})
		require.ErrorIs(t, err, ledger.ErrIDReused, "the refund's own ID is taken")
		assert.Equal(t, [2]int64{100, 0}, e.balance("alice"))
		e.verify()
	})
}

// TestIDsAreExact: IDs differing in case or trailing space are different IDs and users,
// on MySQL too (VARBINARY columns).
func TestIDsAreExact(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("c", "kim", 1)
		e.charge("C", "Kim", 2)
		e.charge("c ", "kim ", 4)
		e.charge("김", "김", 8)
		for user, want := range map[string]int64{"kim": 1, "Kim": 2, "kim ": 4, "김": 8} {
			assert.Equal(t, [2]int64{want, 0}, e.balance(user), user)
		}
		assert.EqualValues(t, 4, e.verify().Users)
	})
}

func TestSpendInsufficient(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("c1", "alice", 100)
		_, err := e.spend("s1", "alice", 150)
		ins := requireAs[*ledger.InsufficientPointsError](t, err, ledger.ErrInsufficientPoints)
		assert.Equal(t, ledger.InsufficientPointsError{User: "alice", Available: 100, Requested: 150}, *ins)
		assert.Equal(t, [2]int64{100, 0}, e.balance("alice"))
		assert.Len(t, e.history("alice"), 1, "a rejected spend records nothing")

		_, err = e.spend("s2", "nobody", 1)
		ins = requireAs[*ledger.InsufficientPointsError](t, err, ledger.ErrInsufficientPoints)
		assert.Zero(t, ins.Available)

		r, err := e.spend("s1", "alice", 50)
		require.NoError(t, err, "a rejected transfer leaves its ID free")
		assert.EqualValues(t, 50, r.Balance.Available)
		assert.EqualValues(t, 1, e.verify().Users, "a failed spend creates no account")
	})
}

// TestReplayAfterBalanceIsGone: a repeated spend returns its receipt even when the balance
// could no longer pay for it.
func TestReplayAfterBalanceIsGone(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("c1", "alice", 100)
		first, err := e.spend("s1", "alice", 100)
		require.NoError(t, err)
		again, err := e.spend("s1", "alice", 100)
		require.NoError(t, err)
		assert.Equal(t, first, again)
		_, err = e.spend("s1", "alice", 50)
		require.ErrorIs(t, err, ledger.ErrIDReused)
		assert.Equal(t, [2]int64{0, 0}, e.balance("alice"))
	})
}

func TestRefund(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("c1", "alice", 1000)
		_, err := e.spend("s1", "alice", 400)
		require.NoError(t, err)

		r1, err := e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r1", SpendID: "s1", Amount: 150, Reference: "cancel-1"})
		require.NoError(t, err)
		assert.Equal(t, rec("r1", ledger.TypeRefund, "alice", 150, 750, 0, e.clock.Now()), r1)
		_, err = e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r2", SpendID: "s1", Amount: 250})
		require.NoError(t, err)
		assert.Equal(t, [2]int64{1000, 0}, e.balance("alice"))

		_, err = e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r3", SpendID: "s1", Amount: 1})
		re := requireAs[*ledger.RefundError](t, err, ledger.ErrRefundExceedsSpend)
		assert.Equal(t, ledger.RefundError{SpendID: "s1", Spent: 400, Refunded: 400, Requested: 1}, *re)

		again, err := e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r1", SpendID: "s1", Amount: 150, Reference: "cancel-1"})
		require.NoError(t, err, "a repeated refund returns its receipt although the spend is fully refunded")
		assert.Equal(t, r1, again)

		_, err = e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r4", SpendID: "nope", Amount: 1})
		require.ErrorIs(t, err, ledger.ErrSpendNotFound)
		_, err = e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r4", SpendID: "c1", Amount: 1})
		require.ErrorIs(t, err, ledger.ErrSpendNotFound, "a charge is not a spend")
		assert.Equal(t, [2]int64{1000, 0}, e.balance("alice"))
		e.verify()
	})
}

func TestRefundCapturedHold(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("c1", "alice", 1000)
		e.hold("h1", "alice", 300)
		_, err := e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r1", SpendID: "h1", Amount: 1})
		require.ErrorIs(t, err, ledger.ErrSpendNotFound, "a pending hold took nothing yet")

		_, err = e.l.Capture(e.ctx, "h1", 200)
		require.NoError(t, err)
		r, err := e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r1", SpendID: "h1", Amount: 200})
		require.NoError(t, err)
		assert.EqualValues(t, 1000, r.Balance.Available)
		_, err = e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r2", SpendID: "h1", Amount: 1})
		re := requireAs[*ledger.RefundError](t, err, ledger.ErrRefundExceedsSpend)
		assert.EqualValues(t, 200, re.Spent, "a hold's refunds are bounded by what was captured")

		info, err := e.l.LookupHold(e.ctx, "h1")
		require.NoError(t, err)
		assert.EqualValues(t, 200, info.Refunded)
		assert.EqualValues(t, 0, system(t, e.verify())[ledger.AccountRedeemed])
	})
}

func TestAdjust(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		r, err := e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a1", User: "alice", Delta: 500, Reason: "보상: 장애"})
		require.NoError(t, err)
		assert.Equal(t, rec("a1", ledger.TypeAdjust, "alice", 500, 500, 0, e.clock.Now()), r)
		r, err = e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a2", User: "alice", Delta: -200, Reason: "double credit", Reference: "ticket-9"})
		require.NoError(t, err)
		assert.EqualValues(t, 200, r.Amount)
		_, err = e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a3", User: "alice", Delta: -400, Reason: "too much"})
		ins := requireAs[*ledger.InsufficientPointsError](t, err, ledger.ErrInsufficientPoints)
		assert.EqualValues(t, 300, ins.Available)

		h := e.history("alice")
		require.Len(t, h, 2)
		assert.Equal(t, ledger.Entry{ID: "a2", Type: ledger.TypeAdjust, Amount: 200, Change: -200,
			Balance: ledger.Balance{Available: 300, Total: 300}, Reference: "ticket-9", Reason: "double credit", Time: e.clock.Now()}, h[0])
		assert.Equal(t, "보상: 장애", h[1].Reason)
		assert.EqualValues(t, 500, h[1].Change)
		assert.EqualValues(t, -300, system(t, e.verify())[ledger.AccountAdjusted])
	})
}
