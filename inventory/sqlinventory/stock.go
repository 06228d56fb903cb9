package sqlinventory

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/inventory"
)

const selectStock = `SELECT sku, available, reserved, sold, buyer_limit FROM inventory_stock`

// SetStock creates the SKU or sets its on-hand count and buyer limit.
func (b *Backend) SetStock(ctx context.Context, s inventory.StockSetting) (inventory.Stock, error) {
	var out inventory.Stock
	err := b.inTx(ctx, "set stock", func(ctx context.Context, tx bun.Tx) error {
		st, err := b.stock(ctx, tx, s.SKU, b.forUpdate)
		if sqlutil.IsNoRows(err) {
			out = inventory.Stock{SKU: s.SKU, OnHand: s.OnHand, Available: s.OnHand, BuyerLimit: s.BuyerLimit}
			_, err := tx.ExecContext(ctx, `INSERT INTO inventory_stock (sku, available, reserved, sold, buyer_limit) VALUES (?, ?, 0, 0, ?)`,
				s.SKU, s.OnHand, s.BuyerLimit)
			return err
		}
		if err != nil {
			return err
		}
		if s.OnHand < st.Reserved {
			return &inventory.InsufficientStockError{SKU: s.SKU, Requested: st.OnHand - s.OnHand, Available: st.Available}
		}
		st.Available, st.OnHand, st.BuyerLimit = s.OnHand-st.Reserved, s.OnHand, s.BuyerLimit
		out = st
		_, err = tx.ExecContext(ctx, `UPDATE inventory_stock SET available = ?, buyer_limit = ? WHERE sku = ?`,
			st.Available, st.BuyerLimit, s.SKU)
		return err
	})
	return out, err
}

// Adjust records the adjustment and applies its delta, once per ID.
func (b *Backend) Adjust(ctx context.Context, a inventory.Adjustment, now time.Time) (inventory.Stock, error) {
	var out inventory.Stock
	err := b.inTx(ctx, "adjust", func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO inventory_adjustments (id, sku, delta, reason, created_at) VALUES (?, ?, ?, ?, ?)`,
			a.ID, a.SKU, a.Delta, a.Reason, millis(now))
		if err != nil && sqlutil.IsDuplicateKey(err) {
			var prev inventory.Adjustment
			if err := tx.QueryRowContext(ctx, `SELECT sku, delta, reason FROM inventory_adjustments WHERE id = ?`+b.forUpdate, a.ID).
				Scan(&prev.SKU, &prev.Delta, &prev.Reason); err != nil {
				return err
			}
			if prev.SKU != a.SKU || prev.Delta != a.Delta || prev.Reason != a.Reason {
				return inventory.NewConflictError("adjustment", a.ID)
			}
		} else if err != nil {
			return err
		} else if err := b.applyDelta(ctx, tx, a); err != nil {
			return err
		}
		out, err = b.stock(ctx, tx, a.SKU, "")
		if sqlutil.IsNoRows(err) {
			return &inventory.UnknownSKUError{SKU: a.SKU}
		}
		return err
	})
	return out, err
}

// applyDelta adds a.Delta to the available count with a conditional UPDATE (a negative
// delta may take no more than is available, a positive one may not take the on-hand count
// past MaxOnHand); when it matches no row, a locking read says why (or, if the row changed
// in between, it runs again).
func (b *Backend) applyDelta(ctx context.Context, tx bun.Tx, a inventory.Adjustment) error {
	query, args := `UPDATE inventory_stock SET available = available + ? WHERE sku = ? AND available + ? >= 0`, []any{a.Delta, a.SKU, a.Delta}
	if a.Delta > 0 {
		query = `UPDATE inventory_stock SET available = available + ? WHERE sku = ? AND available + reserved + ? <= ?`
		args = append(args, int64(inventory.MaxOnHand))
	}
	for range maxAttempts {
		n, err := exec(ctx, tx, query, args...)
		if err != nil || n == 1 {
			return err
		}
		st, err := b.stock(ctx, tx, a.SKU, b.forUpdate)
		if sqlutil.IsNoRows(err) {
			return &inventory.UnknownSKUError{SKU: a.SKU}
		}
		if err != nil {
			return err
		}
		if st.Available+a.Delta < 0 {
			return &inventory.InsufficientStockError{SKU: a.SKU, Requested: -a.Delta, Available: st.Available}
		}
		if a.Delta > 0 && st.OnHand+a.Delta > inventory.MaxOnHand {
			return inventory.OnHandPastMax(a.SKU, st.OnHand, a.Delta)
		}
	}
	return rowChanged(a.SKU)
}

// Stocks reads the SKUs with one SELECT.
func (b *Backend) Stocks(ctx context.Context, skus []string) (map[string]inventory.Stock, error) {
	rows, err := b.db.QueryContext(ctx, selectStock+` WHERE sku IN (?)`, bun.List(skus))
	if err != nil {
		return nil, b.fail(ctx, "stocks", err)
	}
	defer rows.Close()
	m := make(map[string]inventory.Stock, len(skus))
	for rows.Next() {
		var st inventory.Stock
		if err := rows.Scan(&st.SKU, &st.Available, &st.Reserved, &st.Sold, &st.BuyerLimit); err != nil {
			return nil, b.fail(ctx, "stocks", err)
		}
		st.OnHand = st.Available + st.Reserved
		m[st.SKU] = st
	}
	if err := rows.Err(); err != nil {
		return nil, b.fail(ctx, "stocks", err)
	}
	return m, nil
}

// stock reads one stock row on db, with lock appended (FOR UPDATE or "").
func (b *Backend) stock(ctx context.Context, db bun.IDB, sku, lock string) (inventory.Stock, error) {
	var st inventory.Stock
	err := db.QueryRowContext(ctx, selectStock+` WHERE sku = ?`+lock, sku).
		Scan(&st.SKU, &st.Available, &st.Reserved, &st.Sold, &st.BuyerLimit)
	st.OnHand = st.Available + st.Reserved
	return st, err
}
