package commerce

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Default caps on the units one user's unpaid orders may hold (see WithUnpaidLimits).
const (
	DefaultMaxUnpaidPerProduct int64 = 20
	DefaultMaxUnpaidUnits      int64 = 100
)

// ErrUnpaidLimit: the user's unpaid orders (PENDING_PAYMENT or PAYING) already hold so many
// units that the new order would exceed a cap of WithUnpaidLimits (*UnpaidLimitError). Pay
// or cancel them first. It keeps one account from holding a catalogue unpaid.
var ErrUnpaidLimit = errcode.New(errcode.FailedPrecondition, "unpaid_limit_reached", "commerce: too many units held by unpaid orders")

// UnpaidLimitError says which cap an order would exceed. It matches ErrUnpaidLimit.
type UnpaidLimitError struct {
	UserID string
	// ProductID is the product whose cap is exceeded; empty for the cap on all units.
	ProductID string
	// Held is what the user's unpaid orders hold already, Requested what the order asks for.
	Held, Requested int64
	Limit           int64
}

// Error says which cap and by how much.
func (e *UnpaidLimitError) Error() string {
	what := "units in all"
	if e.ProductID != "" {
		what = "units of " + e.ProductID
	}
	return fmt.Sprintf("commerce: unpaid orders of %s hold %d %s; %d more would exceed the limit of %d: pay or cancel them first",
		e.UserID, e.Held, what, e.Requested, e.Limit)
}

// Unwrap returns ErrUnpaidLimit.
func (e *UnpaidLimitError) Unwrap() error { return ErrUnpaidLimit }

// WithUnpaidLimits caps the units one user's unpaid orders (PENDING_PAYMENT or PAYING) may
// hold (a PENDING_PAYMENT order past its deadline holds nothing, even before the sweep
// expires it): perProduct of any one product, total in all (defaults DefaultMaxUnpaidPerProduct
// and DefaultMaxUnpaidUnits; 0 lifts a cap, a negative cap is refused). A product's buyer limit (inventory) applies
// besides. An order that would exceed a cap fails with *UnpaidLimitError and changes
// nothing. The caps hold however many orders a user places at once: see checkUnpaidLimits.
func WithUnpaidLimits(perProduct, total int64) Option {
	return func(s *settings) {
		if perProduct < 0 || total < 0 {
			s.Reject("WithUnpaidLimits", fmt.Sprintf("%d per product, %d in all: a cap is negative", perProduct, total))
			return
		}
		s.maxUnpaidPerProduct, s.maxUnpaidUnits = perProduct, total
	}
}

// userLockRow serialises one user's order placements, so that the units their unpaid orders
// hold are counted and added to atomically.
type userLockRow struct {
	bun.BaseModel `bun:"table:commerce_user_locks"`

	UserID    string `bun:"user_id,pk"`
	UpdatedAt int64  `bun:"updated_at"`
}

// checkUnpaidLimits refuses the order r (not inserted yet) if, with it, the unpaid orders of
// its user would hold more units than a cap allows. It runs first in the placing
// transaction tx: it writes the user's lock row (an upsert, so it writes even when the row
// exists), which makes every other placement by the same user wait for tx to end — the row
// lock on MySQL, the database's single writer on SQLite — and only then counts, so two
// concurrent orders never both fit under a cap that holds one. A PENDING_PAYMENT order past
// its deadline (r.CreatedAt is now) counts no more: Pay refuses it and the sweep expires
// it. A PAYING one still counts: its payment's outcome is not known yet.
func (s *Service) checkUnpaidLimits(ctx context.Context, tx bun.Tx, r *orderRow) error {
	perProduct, total := s.cfg.maxUnpaidPerProduct, s.cfg.maxUnpaidUnits
	if perProduct <= 0 && total <= 0 {
		return nil
	}
	conflict := "DUPLICATE KEY UPDATE"
	if sqlutil.IsSQLite(tx) {
		conflict = "CONFLICT (user_id) DO UPDATE"
	}
	_, err := tx.NewInsert().Model(&userLockRow{UserID: r.UserID, UpdatedAt: r.CreatedAt}).
		On(conflict).Set("updated_at = ?", r.CreatedAt).Exec(ctx)
	if err != nil {
		return fmt.Errorf("commerce: lock the orders of %s: %w", r.UserID, err)
	}
	var held []struct {
		ProductID string `bun:"product_id"`
		Qty       int64  `bun:"qty"`
	}
	err = tx.NewSelect().TableExpr("commerce_order_lines AS l").
		Join("JOIN commerce_orders AS o ON o.id = l.order_id").
		ColumnExpr("l.product_id, SUM(l.qty) AS qty").
		Where("o.user_id = ?", r.UserID).
		// The IN lets SQLite search commerce_orders_user_status by (user_id, status), as MySQL's
		// range optimizer does with the OR alone: else it reads the user's whole history.
		Where("o.status IN (?, ?)", StatusPaying, StatusPendingPayment).
		Where("o.status = ? OR o.expires_at > ?", StatusPaying, r.CreatedAt).
		GroupExpr("l.product_id").
		Scan(ctx, &held)
	if err != nil {
		return fmt.Errorf("commerce: count the units held by %s: %w", r.UserID, err)
	}
	byProduct := make(map[string]int64, len(held))
	var heldAll, asked int64
	for _, h := range held {
		byProduct[h.ProductID] = h.Qty
		heldAll += h.Qty
	}
	for _, l := range r.Lines {
		asked += l.Qty
		if perProduct > 0 && byProduct[l.ProductID]+l.Qty > perProduct {
			return &UnpaidLimitError{UserID: r.UserID, ProductID: l.ProductID, Held: byProduct[l.ProductID], Requested: l.Qty, Limit: perProduct}
		}
	}
	if total > 0 && heldAll+asked > total {
		return &UnpaidLimitError{UserID: r.UserID, Held: heldAll, Requested: asked, Limit: total}
	}
	return nil
}
