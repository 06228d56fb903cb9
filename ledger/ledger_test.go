package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/ledger"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is one test's ledger on a fresh database, with a clock that moves only when told.
type env struct {
	t     *testing.T
	ctx   context.Context
	db    *bun.DB
	clock *testclock.Clock
	l     *ledger.Ledger
}

// each runs fn once per database (testenv.EachDB), as a subtest named after it.
func each(t *testing.T, fn func(t *testing.T, e *env)) {
	testenv.EachDB(t, func(t *testing.T, db *bun.DB) { fn(t, newEnv(t, db)) })
}

func newEnv(t *testing.T, db *bun.DB, opts ...ledger.Option) *env {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, ledger.CreateSchema(ctx, db))
	clock := testclock.New(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	return &env{t: t, ctx: ctx, db: db, clock: clock,
		l: ledger.New(db, append([]ledger.Option{ledger.WithClock(clock.Now)}, opts...)...)}
}

func (e *env) charge(id, user string, amount int64) ledger.Receipt {
	e.t.Helper()
	r, err := e.l.Charge(e.ctx, ledger.ChargeRequest{ID: id, User: user, Amount: amount})
	require.NoError(e.t, err)
	return r
}

func (e *env) spend(id, user string, amount int64) (ledger.Receipt, error) {
	return e.l.Spend(e.ctx, ledger.SpendRequest{ID: id, User: user, Amount: amount})
}

func (e *env) hold(id, user string, amount int64) ledger.Receipt {
	e.t.Helper()
	r, err := e.l.Hold(e.ctx, id, user, amount, 15*time.Minute)
	require.NoError(e.t, err)
	return r
}

// balance returns the user's balance as {available, held}.
func (e *env) balance(user string) [2]int64 {
	e.t.Helper()
	b, err := e.l.Balance(e.ctx, user)
	require.NoError(e.t, err)
	require.Equal(e.t, b.Available+b.Held, b.Total)
	return [2]int64{b.Available, b.Held}
}

// history returns the user's whole history, newest first.
func (e *env) history(user string) []ledger.Entry {
	e.t.Helper()
	p, err := e.l.History(e.ctx, user, "", ledger.MaxHistoryLimit)
	require.NoError(e.t, err)
	require.Empty(e.t, p.Next)
	return p.Entries
}

// types lists the entry types of a history, newest first.
func types(entries []ledger.Entry) []ledger.EntryType {
	out := make([]ledger.EntryType, len(entries))
	for i, en := range entries {
		out[i] = en.Type
	}
	return out
}

// verify requires a clean Verify and returns its report.
func (e *env) verify() ledger.Report {
	e.t.Helper()
	r, err := e.l.Verify(e.ctx)
	require.NoError(e.t, err)
	require.True(e.t, r.OK(), "drift: %v", r.Drift)
	assert.Zero(e.t, r.Sum.Sign(), "sum %v", r.Sum)
	return r
}

// system returns the system balances of r as int64s (the tests' ledgers are small).
func system(t *testing.T, r ledger.Report) map[ledger.Account]int64 {
	t.Helper()
	out := make(map[ledger.Account]int64, len(r.System))
	for acct, b := range r.System {
		require.True(t, b.IsInt64(), "%s = %v", acct, b)
		out[acct] = b.Int64()
	}
	return out
}

// requireAs asserts that err matches sentinel and is a *T, and returns it.
func requireAs[T error](t *testing.T, err error, sentinel error) T {
	t.Helper()
	require.ErrorIs(t, err, sentinel)
	var target T
	require.True(t, errors.As(err, &target), "%T is not a %T", err, target)
	return target
}

func rec(id string, typ ledger.EntryType, user string, amount, available, held int64, at time.Time) ledger.Receipt {
	return ledger.Receipt{ID: id, Type: typ, User: user, Amount: amount,
		Balance: ledger.Balance{Available: available, Held: held, Total: available + held}, Time: at}
}
