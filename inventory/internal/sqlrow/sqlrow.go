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

// Time is the UTC time of a column holding Unix milliseconds, 0 being the zero time.
func Time(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
