package sqlinventory

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/internal/sqlrow"
)

// Reserve reserves through the group commit of r's SKUs (reserveBatch) on a *bun.DB,
// and alone in the caller's transaction.
func (b *Backend) Reserve(ctx context.Context, r inventory.Reservation) (inventory.Reservation, error) {
	if b.group != nil {
		return b.group.Reserve(ctx, skuKey(r.Lines), r)
	}
	return b.reserveAlone(ctx, r)
}

// reserveAlone inserts the reservation row first and takes the stock rows last, in SKU
// order: the hot stock row is locked only from its UPDATE to the commit. A statement per
// line, one for the reservation (whose lines are stored in one column) and, with a buyer,
// one for the buyer's usage rows.
func (b *Backend) reserveAlone(ctx context.Context, r inventory.Reservation) (inventory.Reservation, error) {
	var out inventory.Reservation
	err := b.inTx(ctx, "reserve", func(ctx context.Context, tx bun.Tx) error {
		replay, prev, err := sqlrow.Insert(ctx, tx, "inventory_reservations", r, b.shareLock)
		if err != nil || replay {
			out = prev
			return err
		}
		out = r
		if r.BuyerID != "" {
			usage := make(map[usageKey]int64, len(r.Lines))
			for _, l := range r.Lines {
				usage[usageKey{l.SKU, r.BuyerID}] = l.Qty
			}
			if err := b.addUsage(ctx, tx, sortedPairs(usage), usage, 1); err != nil {
				return err
			}
		}
		for _, l := range r.Lines {
			if err := b.take(ctx, tx, l, r.BuyerID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return inventory.Reservation{}, err
	}
	return out, nil
}

const (
	takeStock = `UPDATE inventory_stock SET available = available - ?, reserved = reserved + ?
 WHERE sku = ? AND available >= ? AND buyer_limit = 0`
	// The buyer's usage row already counts this line (Reserve upserts it first).
	takeStockForBuyer = `UPDATE inventory_stock SET available = available - ?, reserved = reserved + ?
 WHERE sku = ? AND available >= ? AND (buyer_limit = 0 OR buyer_limit >=
 (SELECT qty FROM inventory_buyer_usage WHERE sku = ? AND buyer_id = ?))`
)

// maxAttempts bounds how often a conditional UPDATE runs again after the locking read that
// followed its miss found the row fitting after all (possible only once in practice: the
// read holds the row lock).
const maxAttempts = 3

// take moves l.Qty units of l.SKU from available to reserved with one conditional UPDATE.
// When it matches no row, a plain read says why (a sold-out SKU under a storm of buyers
// costs no lock wait); if that read finds the line fitting after all, a locking read checks
// again and the UPDATE runs again under that lock.
func (b *Backend) take(ctx context.Context, tx bun.Tx, l inventory.Line, buyer string) error {
	if b.lockFirst {
		if err := b.check(ctx, tx, l, buyer, b.forUpdate); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE inventory_stock SET available = available - ?, reserved = reserved + ? WHERE sku = ?`,
			l.Qty, l.Qty, l.SKU)
		return err
	}
	for range maxAttempts {
		var n int64
		var err error
		if buyer == "" {
			n, err = exec(ctx, tx, takeStock, l.Qty, l.Qty, l.SKU, l.Qty)
		} else {
			n, err = exec(ctx, tx, takeStockForBuyer, l.Qty, l.Qty, l.SKU, l.Qty, l.SKU, buyer)
		}
		if err != nil || n == 1 {
			return err
		}
		if err := b.check(ctx, tx, l, buyer, ""); err != nil {
			return err
		}
		if err := b.check(ctx, tx, l, buyer, b.forUpdate); err != nil {
			return err
		}
	}
	return rowChanged(l.SKU)
}

// check reads l.SKU's stock row (with lock appended: FOR UPDATE or "") and returns the
// typed error that keeps l from being reserved, or nil when nothing does. The buyer's
// usage row already counts l.
func (b *Backend) check(ctx context.Context, tx bun.Tx, l inventory.Line, buyer, lock string) error {
	avail, limit, err := b.readStock(ctx, tx, l.SKU, lock)
	switch {
	case err != nil:
		return err
	case avail < l.Qty:
		return &inventory.InsufficientStockError{SKU: l.SKU, Requested: l.Qty, Available: avail}
	case limit > 0 && buyer == "":
		return &inventory.BuyerLimitError{SKU: l.SKU, Limit: limit, Requested: l.Qty}
	case limit > 0:
		var used int64
		if err := tx.QueryRowContext(ctx, `SELECT qty FROM inventory_buyer_usage WHERE sku = ? AND buyer_id = ?`, l.SKU, buyer).
			Scan(&used); err != nil {
			return err
		}
		if used > limit {
			return &inventory.BuyerLimitError{SKU: l.SKU, BuyerID: buyer, Limit: limit, Used: used - l.Qty, Requested: l.Qty}
		}
	}
	return nil
}

// readStock reads a stock row's available count and buyer limit, with lock appended.
func (b *Backend) readStock(ctx context.Context, tx bun.Tx, sku, lock string) (avail, limit int64, err error) {
	err = tx.QueryRowContext(ctx, `SELECT available, buyer_limit FROM inventory_stock WHERE sku = ?`+lock, sku).
		Scan(&avail, &limit)
	if sqlutil.IsNoRows(err) {
		return 0, 0, &inventory.UnknownSKUError{SKU: sku}
	}
	return avail, limit, err
}

func rowChanged(sku string) error {
	return fmt.Errorf("the stock row of %q changed %d times under a conditional update", sku, maxAttempts)
}

// exec runs a statement and returns how many rows it changed.
func exec(ctx context.Context, db bun.IDB, query string, args ...any) (int64, error) {
	res, err := db.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
