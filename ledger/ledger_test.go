package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/feature"
	"github.com/uptrace/bun/schema"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
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

// each runs fn once per database (databases), as a subtest named after it.
func each(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, d := range databases() {
		t.Run(d.Name, func(t *testing.T) { fn(t, newEnv(t, d.Open(t))) })
	}
}

// databases are testenv.Databases plus MySQLWithoutReturning: the same MySQL server with
// its dialect stripped of INSERT ... RETURNING, as plain MySQL has none. Where the server has
// it (MariaDB), the ledger reads the balance after a transfer in the journal's INSERT; the
// third database runs its other path, the SELECT before the INSERT, on the same server.
func databases() []testenv.Database {
	return append(testenv.Databases(), testenv.Database{Name: "MySQLWithoutReturning", Open: func(tb testing.TB) *bun.DB {
		db := testenv.MySQL(tb)
		return bun.NewDB(db.DB, withoutReturning{db.Dialect()})
	}})
}

// withoutReturning is a dialect without INSERT ... RETURNING.
type withoutReturning struct{ schema.Dialect }

func (d withoutReturning) Features() feature.Feature {
	return d.Dialect.Features().Remove(feature.InsertReturning)
}

func newEnv(t *testing.T, db *bun.DB, opts ...ledger.Option) *env {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, ledger.CreateSchema(ctx, db))
	clock := testclock.New(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	return &env{t: t, ctx: ctx, db: db, clock: clock,
		l: testkit.Must(ledger.New(db, append([]ledger.Option{ledger.WithClock(clock.Now)}, opts...)...))(t)}
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

// requireChain requires each entry of the user's history to carry the balance that the
// entries up to it add up to: every receipt and entry tells the balance right after it.
func (e *env) requireChain(user string) {
	e.t.Helper()
	entries := e.history(user)
	var available, held int64
	for i := len(entries) - 1; i >= 0; i-- {
		en := entries[i]
		switch en.Type {
		case ledger.TypeHold:
			available, held = available-en.Amount, held+en.Amount
		case ledger.TypeCapture:
			held -= en.Amount
		case ledger.TypeRelease, ledger.TypeVoid, ledger.TypeHoldExpire:
			available, held = available+en.Amount, held-en.Amount
		default:
			available += en.Change
		}
		require.Equal(e.t, ledger.Balance{Available: available, Held: held, Total: available + held}, en.Balance,
			"%s's entry %d of %d: %+v", user, len(entries)-i, len(entries), en)
	}
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

var errAbort = errors.New("checkout failed")

// TestWithTxJoinsTheCallersTransaction: operations on WithTx(tx) commit and roll back with
// the caller's transaction; a failed one undoes only itself.
func TestWithTxJoinsTheCallersTransaction(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("c1", "alice", 100)

		err := e.db.RunInTx(e.ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			l := e.l.WithTx(tx)
			if _, err := l.Spend(ctx, ledger.SpendRequest{ID: "s1", User: "alice", Amount: 30}); err != nil {
				return err
			}
			if _, err := l.Hold(ctx, "h1", "alice", 20, time.Minute); err != nil {
				return err
			}
			return errAbort
		})
		require.ErrorIs(t, err, errAbort)
		assert.Equal(t, [2]int64{100, 0}, e.balance("alice"), "rolled back with the caller")
		assert.Len(t, e.history("alice"), 1)

		var replay, first ledger.Receipt
		err = e.db.RunInTx(e.ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			l := e.l.WithTx(tx)
			var err error
			if first, err = l.Spend(ctx, ledger.SpendRequest{ID: "s1", User: "alice", Amount: 40}); err != nil {
				return err
			}
			if _, err := l.Spend(ctx, ledger.SpendRequest{ID: "s2", User: "alice", Amount: 1000}); !errors.Is(err, ledger.ErrInsufficientPoints) {
				return errors.Join(errors.New("want ErrInsufficientPoints"), err)
			}
			if replay, err = l.Spend(ctx, ledger.SpendRequest{ID: "s1", User: "alice", Amount: 40}); err != nil {
				return err
			}
			if _, err := l.Charge(ctx, ledger.ChargeRequest{ID: "c2", User: "alice", Amount: 10}); err != nil {
				return err
			}
			b, err := l.Balance(ctx, "alice")
			if err == nil && b.Available != 70 {
				err = errors.New("the transaction does not see its own spend")
			}
			if err != nil {
				return err
			}
			_, err = l.Verify(ctx)
			return err
		})
		require.NoError(t, err, "a failed operation leaves the caller's transaction usable")
		assert.Equal(t, first, replay, "a repeat inside the same transaction returns the receipt")
		assert.Equal(t, [2]int64{70, 0}, e.balance("alice"))
		assert.Equal(t, []ledger.EntryType{"charge", "spend", "charge"}, types(e.history("alice")))
		e.verify()
	})
}

// TestAllOrNothingNeverAnswersOverItsWrites: in a caller's transaction marked
// sqlutil.AllOrNothing (no savepoints), a repeated transfer whose writes ran before its
// duplicate was found is not answered from the journal (that would keep a second credit in
// the transaction); it fails with ErrNotUndone, and the caller's rollback leaves one credit.
func TestAllOrNothingNeverAnswersOverItsWrites(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		earn := ledger.EarnRequest{ID: "e1", User: "alice", Amount: 50}
		_, err := e.l.Earn(e.ctx, earn)
		require.NoError(t, err)
		err = e.db.RunInTx(e.ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			_, err := e.l.WithTx(tx).Earn(sqlutil.AllOrNothing(ctx), earn)
			return err
		})
		require.ErrorIs(t, err, sqlutil.ErrNotUndone)
		assert.Equal(t, [2]int64{50, 0}, e.balance("alice"))
		e.verify()
	})
}

func TestHistoryPages(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		start := e.clock.Now()
		total := int64(0)
		for i := int64(1); i <= 25; i++ {
			_, err := e.l.Charge(e.ctx, ledger.ChargeRequest{ID: fmt.Sprint("c", i), User: "alice", Amount: i, Reference: fmt.Sprint("pay-", i)})
			require.NoError(t, err)
			e.clock.Advance(time.Second)
		}
		e.charge("other", "bob", 1)

		var seen []int64
		cursor := ""
		for page := 0; ; page++ {
			p, err := e.l.History(e.ctx, "alice", cursor, 10)
			require.NoError(t, err)
			for _, en := range p.Entries {
				seen = append(seen, en.Amount)
				total = en.Amount * (en.Amount + 1) / 2 // balance after charges 1..n
				assert.Equal(t, ledger.Entry{ID: fmt.Sprint("c", en.Amount), Type: ledger.TypeCharge, Amount: en.Amount,
					Change: en.Amount, Balance: ledger.Balance{Available: total, Total: total},
					Reference: fmt.Sprint("pay-", en.Amount), Time: start.Add(time.Duration(en.Amount-1) * time.Second)}, en)
			}
			if page == 0 {
				e.charge("late", "alice", 100) // committed while paging: only on a new first page
			}
			if p.Next == "" {
				break
			}
			cursor = p.Next
		}
		want := make([]int64, 0, 25)
		for i := int64(25); i >= 1; i-- {
			want = append(want, i)
		}
		assert.Equal(t, want, seen, "newest first, each once")

		p, err := e.l.History(e.ctx, "alice", "", 0)
		require.NoError(t, err)
		assert.Len(t, p.Entries, 26, "limit 0 means the default")
		assert.Equal(t, "late", p.Entries[0].ID)

		p, err = e.l.History(e.ctx, "nobody", "", 10)
		require.NoError(t, err)
		assert.Empty(t, p.Entries)
		assert.Empty(t, p.Next)

		for _, c := range []struct {
			cursor string
			limit  int
			field  string
		}{{"", -1, "limit"}, {"", ledger.MaxHistoryLimit + 1, "limit"}, {"!", 10, "cursor"}, {"-5", 10, "cursor"}, {"zzzzzzzzzzzzzzzzzzzz", 10, "cursor"}} {
			_, err := e.l.History(e.ctx, "alice", c.cursor, c.limit)
			assert.Equal(t, c.field, requireAs[*ledger.ValidationError](t, err, ledger.ErrInvalid).Field)
		}
	})
}

// TestInvalidInput: every malformed request fails with a *ValidationError naming the field
// and changes nothing.
func TestInvalidInput(t *testing.T) {
	long := strings.Repeat("x", ledger.MaxIDLen+1)
	cases := []struct {
		name, field string
		do          func(e *env) error
	}{
		{"empty ID", "ID", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{User: "u", Amount: 1}) }},
		{"long ID", "ID", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{ID: long, User: "u", Amount: 1}) }},
		{"control character", "ID", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{ID: "a\nb", User: "u", Amount: 1}) }},
		{"NUL", "User", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{ID: "c", User: "a\x00", Amount: 1}) }},
		{"bad UTF-8", "User", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{ID: "c", User: "\xff", Amount: 1}) }},
		{"zero amount", "Amount", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{ID: "c", User: "u"}) }},
		{"negative amount", "Amount", func(e *env) error { return chargeErr(e, ledger.ChargeRequest{ID: "c", User: "u", Amount: -1}) }},
		{"huge amount", "Amount", func(e *env) error {
			return chargeErr(e, ledger.ChargeRequest{ID: "c", User: "u", Amount: ledger.MaxAmount + 1})
		}},
		{"long reference", "Reference", func(e *env) error {
			return chargeErr(e, ledger.ChargeRequest{ID: "c", User: "u", Amount: 1, Reference: strings.Repeat("가", ledger.MaxReferenceLen+1)})
		}},
		{"earn without user", "User", func(e *env) error {
			_, err := e.l.Earn(e.ctx, ledger.EarnRequest{ID: "e", Amount: 1})
			return err
		}},
		{"spend zero", "Amount", func(e *env) error { _, err := e.spend("s", "u", 0); return err }},
		{"refund without spend", "SpendID", func(e *env) error {
			_, err := e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r", Amount: 1})
			return err
		}},
		{"adjust zero", "Delta", func(e *env) error {
			_, err := e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a", User: "u", Reason: "r"})
			return err
		}},
		{"adjust min int64", "Delta", func(e *env) error {
			_, err := e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a", User: "u", Delta: math.MinInt64, Reason: "r"})
			return err
		}},
		{"adjust without reason", "Reason", func(e *env) error {
			_, err := e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a", User: "u", Delta: 1})
			return err
		}},
		{"adjust long reason", "Reason", func(e *env) error {
			_, err := e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a", User: "u", Delta: 1, Reason: strings.Repeat("r", ledger.MaxReasonLen+1)})
			return err
		}},
		{"hold zero timeout", "timeout", func(e *env) error { _, err := e.l.Hold(e.ctx, "h", "u", 1, 0); return err }},
		{"hold sub-microsecond timeout", "timeout", func(e *env) error { _, err := e.l.Hold(e.ctx, "h", "u", 1, time.Nanosecond); return err }},
		{"hold long timeout", "timeout", func(e *env) error {
			_, err := e.l.Hold(e.ctx, "h", "u", 1, ledger.MaxHoldTimeout+time.Second)
			return err
		}},
		{"hold zero", "amount", func(e *env) error { _, err := e.l.Hold(e.ctx, "h", "u", 0, time.Minute); return err }},
		{"capture zero", "amount", func(e *env) error { return capture(e, "h", 0) }},
		{"capture without ID", "holdID", func(e *env) error { return capture(e, "", 1) }},
		{"capture all without ID", "holdID", func(e *env) error { _, err := e.l.CaptureAll(e.ctx, ""); return err }},
		{"capture all long ID", "holdID", func(e *env) error { _, err := e.l.CaptureAll(e.ctx, long); return err }},
		{"void long ID", "holdID", func(e *env) error { return void(e, long) }},
		{"balance without user", "user", func(e *env) error { _, err := e.l.Balance(e.ctx, ""); return err }},
		{"expiring without user", "user", func(e *env) error { _, err := e.l.Expiring(e.ctx, ""); return err }},
		{"lookup without ID", "holdID", func(e *env) error { _, err := e.l.LookupHold(e.ctx, ""); return err }},
	}
	each(t, func(t *testing.T, e *env) {
		for _, c := range cases {
			err := c.do(e)
			ve := requireAs[*ledger.ValidationError](t, err, ledger.ErrInvalid)
			assert.Equal(t, c.field, ve.Field, c.name)
		}
		r := e.verify()
		assert.Zero(t, r.Users, "nothing was created")
		assert.Zero(t, r.Transfers)
	})
}

func chargeErr(e *env, r ledger.ChargeRequest) error {
	_, err := e.l.Charge(e.ctx, r)
	return err
}

// TestLongestValues: values at every limit are stored and read back whole.
func TestLongestValues(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		id, user := strings.Repeat("i", ledger.MaxIDLen), strings.Repeat("u", ledger.MaxIDLen)
		ref, reason := strings.Repeat("참", ledger.MaxReferenceLen), strings.Repeat("고", ledger.MaxReasonLen)
		_, err := e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: id, User: user, Delta: ledger.MaxAmount, Reason: reason, Reference: ref})
		require.NoError(t, err)
		h := e.history(user)
		require.Len(t, h, 1)
		assert.Equal(t, id, h[0].ID)
		assert.Equal(t, ref, h[0].Reference)
		assert.Equal(t, reason, h[0].Reason)
		assert.EqualValues(t, ledger.MaxAmount, h[0].Balance.Available)
		e.verify()
	})
}

// TestNewRefusesBadOptions checks that New refuses every invalid option value with an
// error naming the option. That valid ones take effect is shown by the tests using them
// (WithSweepBatch in TestSweepPagesPastBlockedLots, WithClock everywhere).
func TestNewRefusesBadOptions(t *testing.T) {
	db := testenv.SQLite(t)
	construct := func(opts ...ledger.Option) (*ledger.Ledger, error) { return ledger.New(db, opts...) }
	testkit.RefusesBadOptions(t, construct, map[string]ledger.Option{
		"WithSweepInterval: 0s":  ledger.WithSweepInterval(0),
		"WithSweepInterval: -1s": ledger.WithSweepInterval(-time.Second),
		"WithSweepBatch: 0":      ledger.WithSweepBatch(0),
		"WithSweepBatch: -1":     ledger.WithSweepBatch(-1),
		"WithClock: nil":         ledger.WithClock(nil),
		"WithLogger: nil":        ledger.WithLogger(nil),
		"WithObserver: nil":      ledger.WithObserver(nil),
	})
	testkit.Must(construct(ledger.WithSweepInterval(time.Millisecond), ledger.WithSweepBatch(1)))(t)
}

// TestBalanceLimit: no earn or positive adjustment takes a user's points past MaxBalance,
// and no charge or refund past twice it, so no balance overflows int64: a credit past its
// limit is refused and changes nothing, inside a caller's transaction too; and a hold of
// everything can still be voided and expired, and other users' holds swept.
func TestBalanceLimit(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		charges := 0
		fill := func(total int64) {
			t.Helper()
			for have := e.balance("alice"); have[0]+have[1] < total; have = e.balance("alice") {
				charges++
				e.charge(fmt.Sprintf("c%d", charges), "alice", min(ledger.MaxAmount, total-have[0]-have[1]))
			}
		}
		refused := func(limit int64, credit func() (ledger.Receipt, error)) {
			t.Helper()
			_, err := credit()
			var over *ledger.BalanceLimitError
			require.ErrorAs(t, err, &over)
			require.ErrorIs(t, err, ledger.ErrBalanceLimit)
			require.Equal(t, "alice", over.User)
			require.Equal(t, limit, over.Limit)
			require.Greater(t, over.Total, limit)
		}
		fill(ledger.MaxBalance)
		e.charge("bob-c", "bob", 10)
		for _, spend := range []string{"s1", "s2"} { // spent, and bought again
			_, err := e.spend(spend, "alice", 5)
			require.NoError(t, err)
			fill(ledger.MaxBalance)
		}

		// Points given stop at MaxBalance.
		refused(ledger.MaxBalance, func() (ledger.Receipt, error) {
			return e.l.Earn(e.ctx, ledger.EarnRequest{ID: "e-over", User: "alice", Amount: 1, ExpiresAt: e.clock.Now().Add(time.Hour)})
		})
		refused(ledger.MaxBalance, func() (ledger.Receipt, error) {
			return e.l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a-over", User: "alice", Delta: 1, Reason: "goodwill"})
		})
		tx := e.inTx(func(l *ledger.Ledger) {
			_, err := l.Adjust(e.ctx, ledger.AdjustRequest{ID: "a-over-tx", User: "alice", Delta: ledger.MaxAmount, Reason: "goodwill"})
			require.ErrorIs(t, err, ledger.ErrBalanceLimit)
			b, err := l.Balance(e.ctx, "alice")
			require.NoError(t, err)
			require.Equal(t, int64(ledger.MaxBalance), b.Total, "the refused credit is undone in the caller's transaction")
		})
		require.NoError(t, tx.Rollback())
		require.Equal(t, [2]int64{ledger.MaxBalance, 0}, e.balance("alice"))
		require.Empty(t, e.expiring("alice"))

		// Points paid for, or given back, go on to twice MaxBalance.
		_, err := e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r1", SpendID: "s1", Amount: 5})
		require.NoError(t, err)
		fill(2 * ledger.MaxBalance)
		refused(2*ledger.MaxBalance, func() (ledger.Receipt, error) {
			return e.l.Charge(e.ctx, ledger.ChargeRequest{ID: "c-over", User: "alice", Amount: 1})
		})
		refused(2*ledger.MaxBalance, func() (ledger.Receipt, error) {
			return e.l.Refund(e.ctx, ledger.RefundRequest{ID: "r2", SpendID: "s2", Amount: 5})
		})
		require.Equal(t, [2]int64{2 * ledger.MaxBalance, 0}, e.balance("alice"))

		// Everything held can be given back, by Void or by expiry, and Sweep reaches the
		// holds due after it.
		e.hold("h-void", "alice", ledger.MaxAmount)
		_, err = e.l.Void(e.ctx, "h-void")
		require.NoError(t, err)
		e.hold("h-expire", "alice", ledger.MaxAmount)
		e.clock.Advance(time.Second)
		e.hold("h-bob", "bob", 10)
		e.clock.Advance(time.Hour)
		require.Equal(t, 2, e.sweep())
		require.Equal(t, [2]int64{2 * ledger.MaxBalance, 0}, e.balance("alice"))
		require.Equal(t, [2]int64{10, 0}, e.balance("bob"))
		require.True(t, e.verify().OK())
	})
}
