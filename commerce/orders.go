package commerce

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// GetOrder returns an order of the actor: its owner's, or any order for an admin; another
// user's order is ErrOrderNotFound.
func (s *Service) GetOrder(ctx context.Context, orderID string, by Actor) (Order, error) {
	if err := checkID("OrderID", orderID); err != nil {
		return Order{}, err
	}
	r, err := s.ownOrder(ctx, orderID, by)
	if err != nil {
		return Order{}, err
	}
	return r.order(), nil
}

// ListOrders returns a page of the user's orders, newest first, optionally of one status.
// Pages are cut by an opaque cursor, so orders placed meanwhile never shift a later page.
func (s *Service) ListOrders(ctx context.Context, userID string, q OrderQuery) (OrderPage, error) {
	if err := checkID("UserID", userID); err != nil {
		return OrderPage{}, err
	}
	limit, err := pageLimit(q.Limit)
	if err != nil {
		return OrderPage{}, err
	}
	// The page's IDs come from commerce_orders_user (with a status,
	// commerce_orders_user_status) alone, then their rows are joined: reading the rows'
	// other columns in the same query, MariaDB 10.11 chose a ref on user_id over the range
	// from the cursor, reading the history from the newest order for every page.
	ids := s.db.NewSelect().Model((*orderRow)(nil)).Column("id", "created_at").Where("user_id = ?", userID).
		OrderExpr("created_at DESC, id DESC").Limit(int64(limit + 1))
	if q.Status != "" {
		if !q.Status.Valid() { // a typo would match nothing: refused, not an empty page
			return OrderPage{}, invalid("Status", fmt.Sprintf("is not one of %v", Statuses))
		}
		ids = ids.Where("status = ?", q.Status)
	}
	if q.Cursor != "" {
		at, id, ok := strings.Cut(q.Cursor, "_")
		us, perr := strconv.ParseInt(at, 36, 64)
		if !ok || perr != nil || checkID("Cursor", id) != nil {
			return OrderPage{}, invalid("Cursor", "is not a cursor of this list")
		}
		ids = ids.Where("(created_at < ? OR (created_at = ? AND id < ?))", us, us, id)
	}
	var rows []*orderRow
	sel := s.db.NewSelect().Model(&rows).Join("JOIN (?) AS ids ON ids.id = order_row.id", ids).
		OrderExpr("ids.created_at DESC, ids.id DESC")
	if err := sel.Scan(ctx); err != nil {
		return OrderPage{}, fmt.Errorf("commerce: list orders of %s: %w", userID, sqlutil.Unavailable(s.db, err))
	}
	var page OrderPage
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[limit-1]
		page.Next = strconv.FormatInt(last.CreatedAt, 36) + "_" + last.ID
	}
	if err := loadLines(ctx, s.db, rows); err != nil {
		return OrderPage{}, err
	}
	page.Orders = make([]Order, len(rows))
	for i, r := range rows {
		page.Orders[i] = r.order()
	}
	return page, nil
}

// ownOrder reads an order the actor may act on.
func (s *Service) ownOrder(ctx context.Context, id string, by Actor) (*orderRow, error) {
	if !by.Admin {
		if err := checkID("UserID", by.UserID); err != nil {
			return nil, err
		}
	}
	r, err := loadOrder(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	if !by.Admin && r.UserID != by.UserID {
		return nil, fmt.Errorf("%w: %s", ErrOrderNotFound, id)
	}
	return r, nil
}

// current reads an order as it is now.
func (s *Service) current(ctx context.Context, id string) (Order, error) {
	r, err := loadOrder(ctx, s.db, id)
	if err != nil {
		return Order{}, err
	}
	return r.order(), nil
}
