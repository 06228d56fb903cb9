package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strings"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/uptrace/bun"
)

// Report is what Verify found.
type Report struct {
	// Users is the number of user accounts, Transfers the number of journal rows,
	// OpenHolds the number of pending holds.
	Users, Transfers, OpenHolds int64
	// System holds the balances of the system accounts, derived from the journal. They are
	// big integers: a system account sums every movement of its kind ever made (every
	// charge, every redemption), which outgrows int64 long before any user balance does.
	System map[Account]*big.Int
	// Sum is the stored balances of all users plus the system balances; zero when sound.
	Sum *big.Int
	// Drift lists every mismatch, sorted by account; empty when sound.
	Drift []Drift
}

// OK reports whether Verify found no drift.
func (r Report) OK() bool { return len(r.Drift) == 0 }

// Drift is one mismatch found by Verify.
type Drift struct {
	// Account is the account involved; empty for the ledger-wide zero sum.
	Account Account
	// Check names what was compared: "available" (stored available points against the
	// journal), "held" (stored held points against the journal), "open holds" (stored
	// held points against the pending holds), "expiring" (points due to expire against
	// the lots), "refunds" (a spend's refunded total against its refunds in the journal,
	// or those against what the spend took), "sign" (a system account on the wrong side
	// of zero) or "zero sum" (all balances together).
	Check string
	// Stored is what the rows say, Expected what the journal (or the holds, lots, ...)
	// says. A value beyond int64 (a system account, the zero sum, a journal far off the
	// stored balance) is clamped to the nearest int64 and given exactly in Detail.
	Stored, Expected int64
	// Detail names the spend for "refunds", or gives a value beyond int64 exactly; empty
	// otherwise.
	Detail string
}

// newDrift returns the drift of acct, clamping values beyond int64 and giving them in Detail.
func newDrift(acct Account, check string, stored, expected *big.Int) Drift {
	d := Drift{Account: acct, Check: check}
	var exact []string
	d.Stored, exact = clamp("stored", stored, exact)
	d.Expected, exact = clamp("expected", expected, exact)
	d.Detail = strings.Join(exact, ", ")
	return d
}

// clamp returns v as an int64, or the nearest int64 with v's exact value noted.
func clamp(name string, v *big.Int, notes []string) (int64, []string) {
	switch {
	case v.IsInt64():
		return v.Int64(), notes
	case v.Sign() < 0:
		return math.MinInt64, append(notes, name+" "+v.String())
	}
	return math.MaxInt64, append(notes, name+" "+v.String())
}

// String describes the drift in one line.
func (d Drift) String() string {
	s := fmt.Sprintf("%s: stored %d, expected %d", d.Check, d.Stored, d.Expected)
	if d.Account != "" {
		s = string(d.Account) + " " + s
	}
	if d.Detail != "" {
		s += " (" + d.Detail + ")"
	}
	return s
}

// Verify recomputes every balance from the journal and checks it against the stored
// balances: each user's available and held points, the held points against the pending
// holds, the points due to expire against the lots, each spend's refunds, the sign of the
// system accounts, and that all balances sum to zero. It reads one consistent snapshot,
// so it can run beside live traffic; it reads every row, so it costs O(journal).
//
// When it finds drift it returns the report and a *DriftError (ErrDrift) listing it.
func (l *Ledger) Verify(ctx context.Context) (Report, error) {
	var r Report
	read := func(ctx context.Context, tx bun.Tx) error { return verify(ctx, tx, &r) }
	var err error
	if tx, ok := l.db.(bun.Tx); ok {
		err = read(ctx, tx) // reads only: nothing for a savepoint to undo
	} else {
		var opts *sql.TxOptions
		if !sqlutil.IsSQLite(l.db) {
			opts = &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
		}
		err = l.db.RunInTx(ctx, opts, read)
	}
	if err != nil {
		return Report{}, l.translate(ctx, "verify", err)
	}
	if !r.OK() {
		return r, &DriftError{Drift: r.Drift}
	}
	return r, nil
}

// sums is a per-key total, exact whatever the number and size of the amounts.
type sums struct {
	Total *big.Int
	Count int64
}

// total returns the total of s, zero when s is absent.
func (s sums) total() *big.Int {
	if s.Total == nil {
		return new(big.Int)
	}
	return s.Total
}

// sumBy totals column (a non-negative BIGINT) of table per key. SQL cannot be asked for
// SUM(column) itself: SQLite's sum() fails with "integer overflow" as soon as a running
// total passes int64, and MySQL's DECIMAL total does not fit an int64 either. So each
// amount is split into its high and low 32 bits, each half summed in SQL (exact up to 2^31
// rows per key), and the halves combined here in a big.Int.
func sumBy(ctx context.Context, tx bun.Tx, key, column, from string) (map[string]sums, error) {
	var rows []struct {
		Key   string `bun:"k"`
		Hi    int64  `bun:"hi"`
		Lo    int64  `bun:"lo"`
		Count int64  `bun:"n"`
	}
	query := "SELECT " + key + " AS k, SUM(" + column + " >> 32) AS hi, SUM(" + column + " & 4294967295) AS lo, " +
		"COUNT(*) AS n FROM " + from + " GROUP BY " + key
	if err := tx.NewRaw(query).Scan(ctx, &rows); err != nil {
		return nil, err
	}
	m := make(map[string]sums, len(rows))
	for _, r := range rows {
		t := new(big.Int).Lsh(big.NewInt(r.Hi), 32)
		m[r.Key] = sums{Total: t.Add(t, big.NewInt(r.Lo)), Count: r.Count}
	}
	return m, nil
}

func verify(ctx context.Context, tx bun.Tx, r *Report) error {
	var accounts []accountRow
	if err := tx.NewSelect().Model(&accounts).Scan(ctx); err != nil {
		return err
	}
	credits, err := sumBy(ctx, tx, "dst", "amount", "ledger_transfers")
	if err != nil {
		return err
	}
	debits, err := sumBy(ctx, tx, "src", "amount", "ledger_transfers")
	if err != nil {
		return err
	}
	journal := make(map[string]*big.Int, len(credits)+len(debits))
	for k, c := range credits {
		journal[k] = new(big.Int).Set(c.Total)
		r.Transfers += c.Count // one credit per transfer
	}
	for k, d := range debits {
		if journal[k] == nil {
			journal[k] = new(big.Int)
		}
		journal[k].Sub(journal[k], d.Total)
	}
	balance := func(acct Account) *big.Int {
		if b := journal[string(acct)]; b != nil {
			return b
		}
		return new(big.Int)
	}
	holds, err := sumBy(ctx, tx, "user_id", "amount", "ledger_holds WHERE state = 'pending'")
	if err != nil {
		return err
	}
	lots, err := sumBy(ctx, tx, "user_id", "remaining", "ledger_lots")
	if err != nil {
		return err
	}
	var refunds []struct {
		ID       string `bun:"id"`
		UserID   string `bun:"user_id"`
		Spent    int64  `bun:"spent"`
		Refunded int64  `bun:"refunded"`
		Journal  int64  `bun:"journal"`
	}
	err = tx.NewRaw("SELECT s.id, s.user_id, CASE WHEN s.kind = 'hold' THEN COALESCE(h.captured, 0) ELSE s.amount END AS spent, "+
		"s.refunded, COALESCE(r.total, 0) AS journal FROM ledger_transfers AS s "+
		"LEFT JOIN ledger_holds AS h ON h.id = s.id "+
		"LEFT JOIN (SELECT parent_id, SUM(amount) AS total FROM ledger_transfers WHERE kind = 'refund' GROUP BY parent_id) AS r ON r.parent_id = s.id "+
		"WHERE s.kind IN ('spend', 'hold') AND (s.refunded <> 0 OR r.total IS NOT NULL)").Scan(ctx, &refunds)
	if err != nil {
		return err
	}

	drift := func(acct Account, check string, stored, expected *big.Int) {
		if stored.Cmp(expected) != 0 {
			r.Drift = append(r.Drift, newDrift(acct, check, stored, expected))
		}
	}
	seen := make(map[Account]bool, 2*len(accounts))
	r.Sum = new(big.Int)
	for _, a := range accounts {
		ua, ha := UserAccount(a.UserID), HeldAccount(a.UserID)
		seen[ua], seen[ha] = true, true
		available, held := big.NewInt(a.Available), big.NewInt(a.Held)
		drift(ua, "available", available, balance(ua))
		drift(ha, "held", held, balance(ha))
		drift(ha, "open holds", held, holds[a.UserID].total())
		drift(ua, "expiring", big.NewInt(a.Expiring), lots[a.UserID].total())
		r.Sum.Add(r.Sum, available).Add(r.Sum, held)
		r.OpenHolds += holds[a.UserID].Count
	}
	r.Users = int64(len(accounts))
	r.System = make(map[Account]*big.Int)
	for k, total := range journal {
		acct := Account(k)
		switch {
		case strings.HasPrefix(k, "@"):
			r.System[acct] = total
			r.Sum.Add(r.Sum, total)
		case !seen[acct] && total.Sign() != 0: // journal entries of a user without an account row
			check := "available"
			if strings.HasPrefix(k, "held:") {
				check = "held"
			}
			drift(acct, check, new(big.Int), total)
		}
	}
	for user, h := range holds { // pending holds of a user without an account row
		if !seen[HeldAccount(user)] {
			drift(HeldAccount(user), "open holds", new(big.Int), h.total())
		}
	}
	for user, l := range lots { // lots of a user without an account row
		if !seen[UserAccount(user)] {
			drift(UserAccount(user), "expiring", new(big.Int), l.total())
		}
	}
	for acct, sign := range map[Account]int{AccountCharged: -1, AccountRewarded: -1, AccountRedeemed: 1, AccountExpired: 1} {
		if b := balance(acct); b.Sign()*sign < 0 {
			drift(acct, "sign", b, new(big.Int))
		}
	}
	for _, f := range refunds {
		if f.Refunded != f.Journal {
			r.Drift = append(r.Drift, Drift{Account: UserAccount(f.UserID), Check: "refunds",
				Stored: f.Refunded, Expected: f.Journal, Detail: "spend " + f.ID})
		}
		if f.Journal > f.Spent {
			r.Drift = append(r.Drift, Drift{Account: UserAccount(f.UserID), Check: "refunds",
				Stored: f.Journal, Expected: f.Spent, Detail: "spend " + f.ID + " refunded beyond what it took"})
		}
	}
	drift("", "zero sum", r.Sum, new(big.Int))
	sort.SliceStable(r.Drift, func(i, j int) bool { return r.Drift[i].Account < r.Drift[j].Account })
	return nil
}
