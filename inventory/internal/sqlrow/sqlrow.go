// Package sqlrow reads the reservation rows that inventory's SQL-backed stores share: the
// SQL backend's inventory_reservations and the journaled Redis backend's
// inventory_journal_reservations have the same columns.
package sqlrow

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/inventory"
)

// Reservation reads reservation id from table on db, with lock appended to the query
// (" FOR UPDATE", " LOCK IN SHARE MODE" or ""). An unknown ID gives inventory.NotFound.
func Reservation(ctx context.Context, db bun.IDB, table, id, lock string) (inventory.Reservation, error) {
	var state, items string
	var created, expires, resolved int64
	r := inventory.Reservation{ID: id}
	err := db.QueryRowContext(ctx, `SELECT state, items, buyer_id, created_at, expires_at, resolved_at
 FROM `+table+` WHERE id = ?`+lock, id).Scan(&state, &items, &r.BuyerID, &created, &expires, &resolved)
	if sqlutil.IsNoRows(err) {
		return r, inventory.NotFound(id)
	}
	if err != nil {
		return r, err
	}
	if r.Lines, err = inventory.DecodeLines(items); err != nil {
		return r, err
	}
	r.State = inventory.State(state)
	r.CreatedAt, r.ExpiresAt, r.ResolvedAt = Time(created), Time(expires), Time(resolved)
	return r, nil
}

// Insert inserts r into table, as reserved. When a row with r.ID exists it reports a
// replay, with the stored reservation, or a *inventory.ConflictError when its lines or
// buyer differ. The stored row is read with shareLock (" LOCK IN SHARE MODE", or "" where
// there are no row locks): the failed INSERT already holds that shared lock, so
// concurrent replays of one ID wait for its first transaction; asking for an exclusive
// lock would make each of them wait for the others' shared locks, a deadlock.
func Insert(ctx context.Context, db bun.IDB, table string, r inventory.Reservation, shareLock string) (replay bool, prev inventory.Reservation, err error) {
	items := inventory.EncodeLines(r.Lines)
	_, err = db.ExecContext(ctx, `INSERT INTO `+table+` (id, state, items, buyer_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`,
		r.ID, string(inventory.StateReserved), items, r.BuyerID, r.CreatedAt.UnixMilli(), r.ExpiresAt.UnixMilli())
	if err == nil || !sqlutil.IsDuplicateKey(err) {
		return false, inventory.Reservation{}, err
	}
	if prev, err = Reservation(ctx, db, table, r.ID, shareLock); err != nil {
		return true, inventory.Reservation{}, err
	}
	if inventory.EncodeLines(prev.Lines) != items || prev.BuyerID != r.BuyerID {
		return true, inventory.Reservation{}, inventory.NewConflictError("reservation", r.ID)
	}
	return true, prev, nil
}

// Time is the UTC time of a column holding Unix milliseconds, 0 being the zero time.
func Time(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
