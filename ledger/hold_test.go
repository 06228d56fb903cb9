package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/observe"
)

func TestHoldCaptureVoid(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		now := e.clock.Now()
		e.charge("c1", "alice", 1000)
		assert.Equal(t, rec("h1", ledger.TypeHold, "alice", 300, 700, 300, now), e.hold("h1", "alice", 300))
		assert.Equal(t, [2]int64{700, 300}, e.balance("alice"))

		_, err := e.l.Hold(e.ctx, "h0", "alice", 701, time.Minute)
		ins := requireAs[*ledger.InsufficientPointsError](t, err, ledger.ErrInsufficientPoints)
		assert.EqualValues(t, 700, ins.Available, "held points cannot be held again")
		_, err = e.spend("s0", "alice", 701)
		require.ErrorIs(t, err, ledger.ErrInsufficientPoints, "held points cannot be spent")

		// A partial capture gives the rest back.
		e.clock.Advance(time.Minute)
		captured, err := e.l.Capture(e.ctx, "h1", 200)
		require.NoError(t, err)
		assert.Equal(t, rec("h1", ledger.TypeCapture, "alice", 200, 800, 0, now.Add(time.Minute)), captured)
		again, err := e.l.Capture(e.ctx, "h1", 200)
		require.NoError(t, err)
		assert.Equal(t, captured, again, "the same capture returns the original receipt")
		_, err = e.l.Capture(e.ctx, "h1", 100)
		he := requireAs[*ledger.HoldError](t, err, ledger.ErrHoldCaptured)
		assert.Equal(t, ledger.HoldCaptured, he.State)
		assert.EqualValues(t, 200, he.Captured)
		_, err = e.l.Void(e.ctx, "h1")
		require.ErrorIs(t, err, ledger.ErrHoldCaptured)

		// Void gives everything back, once.
		e.hold("h2", "alice", 100)
		voided, err := e.l.Void(e.ctx, "h2")
		require.NoError(t, err)
		assert.Equal(t, rec("h2", ledger.TypeVoid, "alice", 100, 800, 0, e.clock.Now()), voided)
		again, err = e.l.Void(e.ctx, "h2")
		require.NoError(t, err)
		assert.Equal(t, voided, again)
		_, err = e.l.Capture(e.ctx, "h2", 50)
		assert.Equal(t, ledger.HoldVoided, requireAs[*ledger.HoldError](t, err, ledger.ErrHoldVoided).State)

		// A capture of everything leaves no remainder entry; more than held is refused.
		e.hold("h3", "alice", 100)
		_, err = e.l.Capture(e.ctx, "h3", 101)
		he = requireAs[*ledger.HoldError](t, err, ledger.ErrCaptureExceedsHold)
		assert.EqualValues(t, 100, he.Amount)
		assert.EqualValues(t, 101, he.Requested)
		_, err = e.l.Capture(e.ctx, "h3", 100)
		require.NoError(t, err)
		assert.Equal(t, [2]int64{700, 0}, e.balance("alice"))

		// CaptureAll captures what the hold holds, once; it replays a whole Capture and not a
		// partial one.
		e.hold("h4", "alice", 150)
		all, err := e.l.CaptureAll(e.ctx, "h4")
		require.NoError(t, err)
		assert.Equal(t, rec("h4", ledger.TypeCapture, "alice", 150, 550, 0, e.clock.Now()), all)
		again, err = e.l.CaptureAll(e.ctx, "h4")
		require.NoError(t, err)
		assert.Equal(t, all, again)
		again, err = e.l.Capture(e.ctx, "h4", 150)
		require.NoError(t, err)
		assert.Equal(t, all, again)
		again, err = e.l.CaptureAll(e.ctx, "h3")
		require.NoError(t, err, "a whole Capture repeated as CaptureAll")
		assert.EqualValues(t, 100, again.Amount)
		_, err = e.l.CaptureAll(e.ctx, "h1")
		he = requireAs[*ledger.HoldError](t, err, ledger.ErrHoldCaptured)
		assert.EqualValues(t, 300, he.Requested, "after a partial capture")
		assert.Equal(t, [2]int64{550, 0}, e.balance("alice"))

		for _, id := range []string{"nope", "c1"} {
			_, err = e.l.CaptureAll(e.ctx, id)
			require.ErrorIs(t, err, ledger.ErrHoldNotFound)
			_, err = e.l.Capture(e.ctx, id, 1)
			require.ErrorIs(t, err, ledger.ErrHoldNotFound)
			_, err = e.l.Void(e.ctx, id)
			require.ErrorIs(t, err, ledger.ErrHoldNotFound)
		}

		assert.Equal(t, []ledger.EntryType{"capture", "hold", "capture", "hold", "void", "hold", "release", "capture", "hold", "charge"},
			types(e.history("alice")))
		h := e.history("alice")
		assert.Equal(t, ledger.Entry{ID: "h1", Type: ledger.TypeRelease, Amount: 100, Change: 0,
			Balance: ledger.Balance{Available: 800, Total: 800}, Time: now.Add(time.Minute)}, h[6])
		assert.Equal(t, ledger.Entry{ID: "h1", Type: ledger.TypeCapture, Amount: 200, Change: -200,
			Balance: ledger.Balance{Available: 700, Held: 100, Total: 800}, Time: now.Add(time.Minute)}, h[7],
			"the capture's entry: the rest still held, until the release entry after it")
		e.requireChain("alice")
		assert.EqualValues(t, 0, h[8].Change, "a hold keeps the total")

		info, err := e.l.LookupHold(e.ctx, "h1")
		require.NoError(t, err)
		assert.Equal(t, ledger.HoldInfo{ID: "h1", User: "alice", Amount: 300, State: ledger.HoldCaptured, Captured: 200,
			Deadline: now.Add(15 * time.Minute), CreatedAt: now, ResolvedAt: now.Add(time.Minute)}, info)
		_, err = e.l.LookupHold(e.ctx, "nope")
		require.ErrorIs(t, err, ledger.ErrHoldNotFound)
		// A column a newer release adds (during a rolling deploy) leaves the hold readable.
		_, err = e.db.ExecContext(e.ctx, "ALTER TABLE ledger_holds ADD COLUMN added_later VARCHAR(20) NULL")
		require.NoError(t, err)
		afterColumn, err := e.l.LookupHold(e.ctx, "h1")
		require.NoError(t, err)
		assert.Equal(t, info, afterColumn)

		rep := e.verify()
		assert.EqualValues(t, 450, system(t, rep)[ledger.AccountRedeemed])
		assert.Zero(t, rep.OpenHolds)
	})
}

func TestHoldExpiry(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("c1", "alice", 1000)
		held, err := e.l.Hold(e.ctx, "h1", "alice", 300, 10*time.Minute)
		require.NoError(t, err)
		e.hold("h2", "alice", 100) // 15 minutes

		e.clock.Advance(10 * time.Minute)
		for _, err := range []error{capture(e, "h1", 1), void(e, "h1")} {
			assert.Equal(t, ledger.HoldExpired, requireAs[*ledger.HoldError](t, err, ledger.ErrHoldExpired).State)
		}
		assert.Equal(t, [2]int64{600, 400}, e.balance("alice"), "points come back at the sweep")
		assert.EqualValues(t, 2, e.verify().OpenHolds)

		n, err := e.l.Sweep(e.ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, n, "h2 is not due yet")
		assert.Equal(t, [2]int64{900, 100}, e.balance("alice"))
		n, err = e.l.Sweep(e.ctx)
		require.NoError(t, err)
		assert.Zero(t, n)

		info, err := e.l.LookupHold(e.ctx, "h1")
		require.NoError(t, err)
		assert.Equal(t, ledger.HoldExpired, info.State)
		assert.Equal(t, e.clock.Now(), info.ResolvedAt)
		for _, err := range []error{capture(e, "h1", 1), void(e, "h1")} {
			require.ErrorIs(t, err, ledger.ErrHoldExpired)
		}
		again, err := e.l.Hold(e.ctx, "h1", "alice", 300, 10*time.Minute)
		require.NoError(t, err)
		assert.Equal(t, held, again, "repeating the hold returns its receipt")

		top := e.history("alice")[0]
		assert.Equal(t, ledger.TypeHoldExpire, top.Type)
		assert.Equal(t, "h1", top.ID)
		assert.EqualValues(t, 300, top.Amount)
		assert.EqualValues(t, 1, e.verify().OpenHolds)
	})
}

func capture(e *env, id string, amount int64) error {
	_, err := e.l.Capture(e.ctx, id, amount)
	return err
}

func void(e *env, id string) error {
	_, err := e.l.Void(e.ctx, id)
	return err
}

// TestRun: the background loop releases due holds and stops when its context ends.
func TestRun(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		obs := &observe.Recorder{}
		l := testkit.Must(ledger.New(e.db, ledger.WithClock(e.clock.Now), ledger.WithSweepInterval(time.Millisecond), ledger.WithObserver(obs)))(t)
		e.charge("c1", "alice", 100)
		_, err := l.Hold(e.ctx, "h1", "alice", 60, time.Minute)
		require.NoError(t, err)
		_, err = l.Spend(e.ctx, ledger.SpendRequest{ID: "s1", User: "alice", Amount: 41})
		require.ErrorIs(t, err, ledger.ErrInsufficientPoints)
		e.clock.Advance(time.Minute)

		ctx, cancel := context.WithCancel(e.ctx)
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		require.Eventually(t, func() bool {
			b, err := l.Balance(e.ctx, "alice")
			return err == nil && b.Held == 0
		}, 30*time.Second, 5*time.Millisecond)
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err, "Run stops cleanly")
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not stop")
		}
		assert.Equal(t, [2]int64{100, 0}, e.balance("alice"))
		assert.Equal(t, int64(1), obs.Sum("expired", map[string]string{"kind": "hold"}))
		ops := obs.Events("hold", "spend")
		require.Len(t, ops, 2, "the hold and the spend")
		assert.NoError(t, ops[0].Err)
		assert.ErrorIs(t, ops[1].Err, ledger.ErrInsufficientPoints)
		e.verify()
	})
}

// TestErrorsAreDomainErrors: context errors come back as they are, database failures
// wrapped in ErrStorage.
func TestErrorsAreDomainErrors(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		ctx, cancel := context.WithCancel(e.ctx)
		cancel()
		_, err := e.l.Spend(ctx, ledger.SpendRequest{ID: "s1", User: "alice", Amount: 1})
		assert.Equal(t, context.Canceled, err)

		require.NoError(t, e.db.Close())
		_, err = e.l.Charge(e.ctx, ledger.ChargeRequest{ID: "c1", User: "alice", Amount: 1})
		require.ErrorIs(t, err, ledger.ErrStorage)
		_, err = e.l.Balance(e.ctx, "alice")
		require.ErrorIs(t, err, ledger.ErrStorage)
		_, err = e.l.Sweep(e.ctx)
		require.ErrorIs(t, err, ledger.ErrStorage)
		_, err = e.l.Verify(e.ctx)
		require.ErrorIs(t, err, ledger.ErrStorage)
		assert.False(t, errors.Is(err, ledger.ErrDrift))
	})
}

func TestCreateSchemaIsIdempotent(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("c1", "alice", 5)
		require.NoError(t, ledger.CreateSchema(e.ctx, e.db))
		assert.Equal(t, [2]int64{5, 0}, e.balance("alice"), "data survives")
	})
}

// TestTransfersSurviveACrash: the database drops a transfer's connection as its journal row
// is written (on MariaDB the INSERT that returns the balance after; without RETURNING, after
// the SELECT of the account): the transfer fails with errcode.ErrUnavailable and leaves
// nothing behind, and its retry applies it once, with the receipt a repeat returns too.
func TestTransfersSurviveACrash(t *testing.T) {
	for _, d := range databases() {
		if d.Name == "SQLite" {
			continue // the fault is a killed server connection
		}
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			e := newEnv(t, db)
			e.charge("c1", "alice", 1000)
			e.hold("h1", "alice", 300)
			e.hold("h2", "alice", 100)
			ops := []struct {
				name string
				do   func(l *ledger.Ledger) (ledger.Receipt, error)
			}{
				{"spend", func(l *ledger.Ledger) (ledger.Receipt, error) {
					return l.Spend(e.ctx, ledger.SpendRequest{ID: "s1", User: "alice", Amount: 200})
				}},
				{"capture", func(l *ledger.Ledger) (ledger.Receipt, error) { return l.CaptureAll(e.ctx, "h1") }},
				{"partial capture", func(l *ledger.Ledger) (ledger.Receipt, error) { return l.Capture(e.ctx, "h2", 40) }},
				{"earn", func(l *ledger.Ledger) (ledger.Receipt, error) {
					return l.Earn(e.ctx, ledger.EarnRequest{ID: "e1", User: "alice", Amount: 50})
				}},
			}
			for _, op := range ops {
				before, history := e.balance("alice"), len(e.history("alice"))
				crashing := testkit.Must(ledger.New(testenv.KillBefore(t, db, "INSERT INTO `ledger_transfers`"),
					ledger.WithClock(e.clock.Now)))(t)
				_, err := op.do(crashing)
				require.ErrorIs(t, err, errcode.ErrUnavailable, op.name)
				assert.Equal(t, before, e.balance("alice"), "%s: nothing moved", op.name)
				assert.Len(t, e.history("alice"), history, "%s: nothing journaled", op.name)

				r, err := op.do(e.l)
				require.NoError(t, err, op.name)
				again, err := op.do(e.l)
				require.NoError(t, err, op.name)
				assert.Equal(t, r, again, "%s: a repeat answers the same", op.name)
			}
			assert.Equal(t, [2]int64{510, 0}, e.balance("alice"))
			e.requireChain("alice")
			e.verify()
		})
	}
}
