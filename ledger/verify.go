package ledger

import (
	"context"
	"database/sql"
	"fmt"
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
	// System holds the balances of the system accounts, derived from the journal.
	System map[Account]int64
	// Sum is the stored balances of all users plus the system balances; zero when sound.
	Sum int64
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
	// says.
	Stored, Expected int64
	// Detail names the spend for "refunds"; empty otherwise.
	Detail string
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
		err = tx.RunInTx(ctx, nil, read)
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

type sums struct {
	Key   string `bun:"k"`
	Total int64  `bun:"total"`
	Count int64  `bun:"n"`
}

func sumBy(ctx context.Context, tx bun.Tx, query string) (map[string]sums, error) {
	var rows []sums
	if err := tx.NewRaw(query).Scan(ctx, &rows); err != nil {
		return nil, err
	}
	m := make(map[string]sums, len(rows))
	for _, s := range rows {
		m[s.Key] = s
	}
	return m, nil
}

func verify(ctx context.Context, tx bun.Tx, r *Report) error {
	var accounts []accountRow
	if err := tx.NewSelect().Model(&accounts).Scan(ctx); err != nil {
		return err
	}
	journal, err := sumBy(ctx, tx, "SELECT j.acct AS k, SUM(j.amt) AS total, COUNT(*) AS n FROM ("+
		"SELECT dst AS acct, amount AS amt FROM ledger_transfers UNION ALL "+
		"SELECT src AS acct, -amount AS amt FROM ledger_transfers) AS j GROUP BY j.acct")
	if err != nil {
		return err
	}
	holds, err := sumBy(ctx, tx, "SELECT user_id AS k, SUM(amount) AS total, COUNT(*) AS n FROM ledger_holds WHERE state = 'pending' GROUP BY user_id")
	if err != nil {
		return err
	}
	lots, err := sumBy(ctx, tx, "SELECT user_id AS k, SUM(remaining) AS total, COUNT(*) AS n FROM ledger_lots GROUP BY user_id")
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

	drift := func(acct Account, check string, stored, expected int64) {
		if stored != expected {
			r.Drift = append(r.Drift, Drift{Account: acct, Check: check, Stored: stored, Expected: expected})
		}
	}
	seen := make(map[Account]bool, 2*len(accounts))
	for _, a := range accounts {
		ua, ha := UserAccount(a.UserID), HeldAccount(a.UserID)
		seen[ua], seen[ha] = true, true
		drift(ua, "available", a.Available, journal[string(ua)].Total)
		drift(ha, "held", a.Held, journal[string(ha)].Total)
		drift(ha, "open holds", a.Held, holds[a.UserID].Total)
		drift(ua, "expiring", a.Expiring, lots[a.UserID].Total)
		r.Sum += a.Available + a.Held
		r.OpenHolds += holds[a.UserID].Count
	}
	r.Users = int64(len(accounts))
	r.System = make(map[Account]int64)
	for k, s := range journal {
		acct := Account(k)
		r.Transfers += s.Count // every transfer has two sides
		switch {
		case strings.HasPrefix(k, "@"):
			r.System[acct] = s.Total
			r.Sum += s.Total
		case !seen[acct] && s.Total != 0: // journal entries of a user without an account row
			check := "available"
			if strings.HasPrefix(k, "held:") {
				check = "held"
			}
			drift(acct, check, 0, s.Total)
		}
	}
	r.Transfers /= 2
	for acct, sign := range map[Account]int64{AccountCharged: -1, AccountRewarded: -1, AccountRedeemed: 1, AccountExpired: 1} {
		if r.System[acct]*sign < 0 {
			drift(acct, "sign", r.System[acct], 0)
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
	drift("", "zero sum", r.Sum, 0)
	sort.SliceStable(r.Drift, func(i, j int) bool { return r.Drift[i].Account < r.Drift[j].Account })
	return nil
}
