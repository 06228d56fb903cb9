package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
