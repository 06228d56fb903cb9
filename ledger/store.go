package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/feature"
)

// The statements below run inside a transaction. Lock order, everywhere: the hold row,
// then the account row, then the user's lots; the journal is append-only.

// errDuplicate says the journal already has a transfer with the ID being inserted.
var errDuplicate = errors.New("ledger: duplicate transfer ID")

// moveAccount adds dAvail and dHeld to the user's account if neither goes below zero
// (UPDATE ... SET available = available + ? WHERE ... AND available >= ?) and reports
// whether it did. A missing account is left missing.
func moveAccount(ctx context.Context, db bun.IDB, user string, dAvail, dHeld int64, now time.Time) (bool, error) {
	res, err := db.ExecContext(ctx,
		"UPDATE ledger_accounts SET available = available + ?, held = held + ?, updated_at = ? "+
			"WHERE user_id = ? AND available >= ? AND held >= ?",
		dAvail, dHeld, now, user, max(0, -dAvail), max(0, -dHeld))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// creditAccount adds amount to the user's available points (and expiring to the points due
// to expire), creating the account on first use.
func creditAccount(ctx context.Context, db bun.IDB, user string, amount, expiring int64, now time.Time) error {
	q := "INSERT INTO ledger_accounts (user_id, available, held, expiring, created_at, updated_at) VALUES (?, ?, 0, ?, ?, ?) " +
		"ON DUPLICATE KEY UPDATE available = available + ?, expiring = expiring + ?, updated_at = ?"
	if sqlutil.IsSQLite(db) {
		q = "INSERT INTO ledger_accounts (user_id, available, held, expiring, created_at, updated_at) VALUES (?, ?, 0, ?, ?, ?) " +
			"ON CONFLICT (user_id) DO UPDATE SET available = available + ?, expiring = expiring + ?, updated_at = ?"
	}
	_, err := db.ExecContext(ctx, q, user, amount, expiring, now, now, amount, expiring, now)
	return err
}

// readAccount reads the user's account; a missing account reads as zero.
func readAccount(ctx context.Context, db bun.IDB, user string, lock bool) (accountRow, error) {
	a := accountRow{UserID: user}
	q := db.NewSelect().Model(&a).WherePK()
	if lock {
		q = sqlutil.ForUpdate(q)
	}
	if err := q.Scan(ctx); err != nil && !sqlutil.IsNoRows(err) {
		return a, err
	}
	return a, nil
}

// journal appends t to the journal with the user's balance after the move that precedes
// it in the transaction, but with pending points still held that a later row of the same
// move gives back (from Held to Available), and returns the account's points due to
// expire. The move locked the account row, so nothing else changes it until the
// transaction ends.
//
// Where the dialect has INSERT ... RETURNING (MariaDB 10.5+, SQLite) the INSERT reads the
// account itself and returns what it read; elsewhere (MySQL) a SELECT precedes it.
func journal(ctx context.Context, db bun.IDB, t *transferRow, pending int64) (expiring int64, err error) {
	if !db.Dialect().Features().Has(feature.InsertReturning) {
		a, err := readAccount(ctx, db, t.UserID, false)
		if err != nil {
			return 0, err
		}
		t.AvailableAfter, t.HeldAfter = a.Available-pending, a.Held+pending
		return a.Expiring, insertTransfer(ctx, db, t)
	}
	err = db.NewInsert().Model(t).
		Value("available_after", "(SELECT available - ? FROM ledger_accounts WHERE user_id = ?)", pending, t.UserID).
		Value("held_after", "(SELECT held + ? FROM ledger_accounts WHERE user_id = ?)", pending, t.UserID).
		Returning("available_after, held_after, (SELECT expiring FROM ledger_accounts WHERE user_id = ?)", t.UserID).
		Scan(ctx, &t.AvailableAfter, &t.HeldAfter, &expiring)
	return expiring, duplicate(t, err)
}

// insertTransfer appends t, whose balance after is known, to the journal; errDuplicate
// when its ID is taken.
func insertTransfer(ctx context.Context, db bun.IDB, t *transferRow) error {
	_, err := db.NewInsert().Model(t).Exec(ctx)
	return duplicate(t, err)
}

// duplicate turns err, from the insert of t into the journal, into errDuplicate when it
// says t's ID is taken.
func duplicate(t *transferRow, err error) error {
	if err != nil && t.ID != "" && sqlutil.IsDuplicateKey(err) {
		return errDuplicate
	}
	return err
}

// findTransfer reads the caller's transfer id; found is false when there is none. lock
// reads the latest committed row (FOR UPDATE on MySQL) rather than the transaction's
// snapshot.
//
// A locking read through ledger_transfers_id, a unique index of a NULLable column, takes
// InnoDB's next-key lock there: the gap below the ID too, where another user's transfer
// would wait until this transaction ended. So lock reads the row's seq from the snapshot
// and locks the row by its primary key (the row only); only when the snapshot has no such
// transfer (there is none, or a caller's transaction took its snapshot before it was
// committed) does it lock through the index. Journal rows are never deleted.
func findTransfer(ctx context.Context, db bun.IDB, id string, lock bool) (t transferRow, found bool, err error) {
	q := db.NewSelect().Model(&t).Where("t.id = ?", id)
	if lock {
		var seq int64
		switch err := db.NewSelect().Model((*transferRow)(nil)).Column("seq").Where("id = ?", id).Scan(ctx, &seq); {
		case err == nil:
			q = db.NewSelect().Model(&t).Where("t.seq = ?", seq)
		case !sqlutil.IsNoRows(err):
			return t, false, err
		}
		q = sqlutil.ForUpdate(q)
	}
	switch err := q.Scan(ctx); {
	case sqlutil.IsNoRows(err):
		return t, false, nil
	case err != nil:
		return t, false, err
	}
	return t, true, nil
}

// findHold reads and, on MySQL, locks the hold id.
func findHold(ctx context.Context, db bun.IDB, id string) (h holdRow, found bool, err error) {
	h.ID = id
	switch err := sqlutil.ForUpdate(db.NewSelect().Model(&h).WherePK()).Scan(ctx); {
	case sqlutil.IsNoRows(err):
		return h, false, nil
	case err != nil:
		return h, false, err
	}
	return h, true, nil
}

// consume takes amount points that left the user's balance for good (spend, capture,
// negative adjustment) out of the user's lots of expiring points, soonest expiry first, so
// that what is left to expire never exceeds the balance. expiring is the account's
// current sum of lots.
func consume(ctx context.Context, db bun.IDB, user string, amount, expiring int64, now time.Time) error {
	if expiring <= 0 {
		return nil
	}
	lots, err := lockLots(ctx, db, user, expiring)
	if err != nil {
		return err
	}
	taken := int64(0)
	for _, lot := range lots {
		if taken == amount {
			break
		}
		take := min(lot.Remaining, amount-taken)
		if err := takeFromLot(ctx, db, lot, take); err != nil {
			return err
		}
		taken += take
	}
	return reduceExpiring(ctx, db, user, taken, now)
}

// lockLots returns the user's lots, soonest expiry first, locked. expiring is the account's
// sum of lots, read under the account's lock.
//
// A locking read of the user's range of ledger_lots_user would take InnoDB's next-key
// locks, and with them the gap up to the next user's first lot: that user could not earn
// expiring points until this transaction ended. So lockLots reads the user's lot IDs
// without locks, then locks those rows by primary key (rows only, no gap), and checks that
// they are all of them: their remaining points, as locked, add up to expiring. Every lot
// is positive, so none is missing. Only when a lot was added since this transaction's
// snapshot (possible in a caller's transaction that read before it took the account's
// lock) does it fall back to the locking read of the range.
func lockLots(ctx context.Context, db bun.IDB, user string, expiring int64) ([]lotRow, error) {
	var ids []string
	if err := db.NewSelect().Model((*lotRow)(nil)).Column("id").Where("user_id = ?", user).Scan(ctx, &ids); err != nil {
		return nil, err
	}
	var lots []lotRow
	if len(ids) > 0 {
		q := sqlutil.SelectByPK(db, &lots).Where("l.id IN (?)", bun.List(ids)).OrderExpr("l.expires_at, l.id")
		if err := sqlutil.ForUpdate(q).Scan(ctx); err != nil {
			return nil, err
		}
		sum := int64(0)
		for _, lot := range lots {
			sum += lot.Remaining
		}
		if sum == expiring {
			return lots, nil
		}
	}
	lots = nil
	q := db.NewSelect().Model(&lots).Where("l.user_id = ?", user).OrderExpr("l.expires_at, l.id")
	return lots, sqlutil.ForUpdate(q).Scan(ctx)
}

// takeFromLot removes take points from lot, deleting it when nothing is left.
func takeFromLot(ctx context.Context, db bun.IDB, lot lotRow, take int64) error {
	var err error
	if take == lot.Remaining {
		_, err = db.NewDelete().Model(&lot).WherePK().Exec(ctx)
	} else {
		_, err = db.NewUpdate().Model(&lot).Set("remaining = remaining - ?", take).WherePK().Exec(ctx)
	}
	return err
}

func reduceExpiring(ctx context.Context, db bun.IDB, user string, by int64, now time.Time) error {
	if by == 0 {
		return nil
	}
	res, err := db.ExecContext(ctx,
		"UPDATE ledger_accounts SET expiring = expiring - ?, updated_at = ? WHERE user_id = ? AND expiring >= ?",
		by, now, user, by)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return firstErr(err, fmt.Errorf("%w: account %q expires less than its lots", ErrConflict, user))
	}
	return nil
}
