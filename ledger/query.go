package ledger

import (
	"context"
	"strconv"
)

// Balance returns the user's points; a user who never had any has a zero balance.
// Points or holds that are due but not swept yet are still counted (see Sweep).
func (l *Ledger) Balance(ctx context.Context, user string) (Balance, error) {
	if err := checkID("user", user); err != nil {
		return Balance{}, err
	}
	a, err := readAccount(ctx, l.db, user, false)
	if err != nil {
		return Balance{}, l.translate(ctx, "balance", err)
	}
	return balance(a.Available, a.Held), nil
}

// History returns a page of the user's history, newest first: at most limit entries
// (DefaultHistoryLimit for 0, at most MaxHistoryLimit) older than cursor ("" for the
// newest). Pass the page's Next as the cursor of the following page. A user's entries are
// numbered in commit order, so paging never skips an entry committed meanwhile: new
// entries appear only on the first page.
func (l *Ledger) History(ctx context.Context, user, cursor string, limit int) (HistoryPage, error) {
	err := checkID("user", user)
	if limit == 0 {
		limit = DefaultHistoryLimit
	}
	if limit < 0 || limit > MaxHistoryLimit {
		err = firstErr(err, invalid("limit", "%d is not in 0..%d", limit, MaxHistoryLimit))
	}
	var before int64
	if cursor != "" {
		var perr error
		if before, perr = strconv.ParseInt(cursor, 36, 64); perr != nil || before <= 0 {
			err = firstErr(err, invalid("cursor", "%q is not a cursor from History", cursor))
		}
	}
	if err != nil {
		return HistoryPage{}, err
	}
	var rows []transferRow
	q := l.db.NewSelect().Model(&rows).Where("t.user_id = ?", user)
	if before > 0 {
		q = q.Where("t.seq < ?", before)
	}
	if err := q.OrderExpr("t.seq DESC").Limit(int64(limit) + 1).Scan(ctx); err != nil {
		return HistoryPage{}, l.translate(ctx, "history", err)
	}
	var page HistoryPage
	if len(rows) > limit {
		rows = rows[:limit]
		page.Next = strconv.FormatInt(rows[limit-1].Seq, 36)
	}
	page.Entries = make([]Entry, len(rows))
	for i := range rows {
		page.Entries[i] = rows[i].entry()
	}
	return page, nil
}

// Expiring lists the user's earned points that are due to expire, soonest first.
func (l *Ledger) Expiring(ctx context.Context, user string) ([]Expiry, error) {
	if err := checkID("user", user); err != nil {
		return nil, err
	}
	var lots []lotRow
	if err := l.db.NewSelect().Model(&lots).Where("l.user_id = ?", user).OrderExpr("l.expires_at, l.id").Scan(ctx); err != nil {
		return nil, l.translate(ctx, "expiring", err)
	}
	out := make([]Expiry, len(lots))
	for i, lot := range lots {
		out[i] = Expiry{EarnID: lot.ID, Amount: lot.Remaining, ExpiresAt: lot.ExpiresAt.UTC()}
	}
	return out, nil
}
