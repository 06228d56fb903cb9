package sqlinventory

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/internal/sqlrow"
)

// Commit commits a reserved reservation, or expires it when its deadline has passed.
func (b *Backend) Commit(ctx context.Context, id string, now time.Time) (inventory.State, error) {
	return b.resolve(ctx, "commit", id, now, inventory.StateCommitted)
}

// Release releases a reserved reservation, or expires it when its deadline has passed.
func (b *Backend) Release(ctx context.Context, id string, now time.Time) (inventory.State, error) {
	return b.resolve(ctx, "release", id, now, inventory.StateReleased)
}

// resolve locks the reservation row, and if it is still reserved moves it to `to` (or to
// expired past its deadline) and moves its units. It returns the final state.
func (b *Backend) resolve(ctx context.Context, op, id string, now time.Time, to inventory.State) (inventory.State, error) {
	var final inventory.State
	err := b.inTx(ctx, op, func(ctx context.Context, tx bun.Tx) error {
		r, err := b.get(ctx, tx, id, b.forUpdate)
		if err != nil {
			return err
		}
		final = r.State
		if r.State != inventory.StateReserved {
			return nil
		}
		final = to
		if !now.Before(r.ExpiresAt) {
			final = inventory.StateExpired
		}
		if _, err := tx.ExecContext(ctx, `UPDATE inventory_reservations SET state = ?, resolved_at = ? WHERE id = ?`,
			string(final), millis(now), id); err != nil {
			return err
		}
		return b.moveUnits(ctx, tx, []inventory.Reservation{r}, final)
	})
	return final, err
}

// Return returns a committed reservation: its units go from sold back to available and
// the buyer's allowance back. The row keeps its state forever, so a replay at any time
// finds it returned and moves nothing.
func (b *Backend) Return(ctx context.Context, id string, now time.Time) (inventory.State, error) {
	var final inventory.State
	err := b.inTx(ctx, "return", func(ctx context.Context, tx bun.Tx) error {
		r, err := b.get(ctx, tx, id, b.forUpdate)
		if err != nil {
			return err
		}
		if final = r.State; final != inventory.StateCommitted {
			return nil
		}
		final = inventory.StateReturned
		if _, err := tx.ExecContext(ctx, `UPDATE inventory_reservations SET state = ?, resolved_at = ? WHERE id = ?`,
			string(final), millis(now), id); err != nil {
			return err
		}
		return b.moveUnits(ctx, tx, []inventory.Reservation{r}, final)
	})
	return final, err
}

// Expire expires up to limit due reservations in one transaction. On MySQL it skips rows
// another transaction holds (a Commit in progress, another sweeper), so sweepers never
// wait on each other.
func (b *Backend) Expire(ctx context.Context, now time.Time, limit int) (int, error) {
	var n int
	err := b.inTx(ctx, "expire", func(ctx context.Context, tx bun.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, items, buyer_id FROM inventory_reservations
 WHERE state = ? AND expires_at <= ? ORDER BY expires_at LIMIT ?`+b.skipLocked,
			string(inventory.StateReserved), millis(now), limit)
		if err != nil {
			return err
		}
		var due []inventory.Reservation
		var ids []string
		for rows.Next() {
			var r inventory.Reservation
			var items string
			if err := rows.Scan(&r.ID, &items, &r.BuyerID); err != nil {
				rows.Close()
				return err
			}
			if r.Lines, err = inventory.DecodeLines(items); err != nil {
				rows.Close()
				return err
			}
			due = append(due, r)
			ids = append(ids, r.ID)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		n = len(due)
		if n == 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE inventory_reservations SET state = ?, resolved_at = ? WHERE id IN (?)`,
			string(inventory.StateExpired), millis(now), bun.List(ids)); err != nil {
			return err
		}
		return b.moveUnits(ctx, tx, due, inventory.StateExpired)
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// moveUnits moves the units of resolved reservations: to sold for a commit, from sold
// back to available for a return, from reserved back to available otherwise (and the
// buyer allowance back, except for a commit). Quantities are summed per row and
// rows are updated in a fixed order, usage rows (by SKU, buyer) before stock rows (by SKU),
// the order Reserve locks them in.
func (b *Backend) moveUnits(ctx context.Context, tx bun.Tx, rs []inventory.Reservation, to inventory.State) error {
	stock := map[string]int64{}
	usage := map[usageKey]int64{}
	for _, r := range rs {
		for _, l := range r.Lines {
			stock[l.SKU] += l.Qty
			if r.BuyerID != "" && to != inventory.StateCommitted {
				usage[usageKey{l.SKU, r.BuyerID}] += l.Qty
			}
		}
	}
	if err := b.addUsage(ctx, tx, sortedPairs(usage), usage, -1); err != nil {
		return err
	}
	query := `UPDATE inventory_stock SET reserved = reserved - ?, available = available + ? WHERE sku = ?`
	switch to {
	case inventory.StateCommitted:
		query = `UPDATE inventory_stock SET reserved = reserved - ?, sold = sold + ? WHERE sku = ?`
	case inventory.StateReturned:
		query = `UPDATE inventory_stock SET sold = sold - ?, available = available + ? WHERE sku = ?`
	}
	for _, sku := range slices.Sorted(maps.Keys(stock)) {
		if _, err := tx.ExecContext(ctx, query, stock[sku], stock[sku], sku); err != nil {
			return err
		}
	}
	return nil
}

// Get reads a reservation.
func (b *Backend) Get(ctx context.Context, id string) (inventory.Reservation, error) {
	r, err := b.get(ctx, b.db, id, "")
	return r, b.fail(ctx, "get", err)
}

// get reads a reservation on db, with lock appended to the query (FOR UPDATE or "").
func (b *Backend) get(ctx context.Context, db bun.IDB, id, lock string) (inventory.Reservation, error) {
	return sqlrow.Reservation(ctx, db, "inventory_reservations", id, lock)
}
