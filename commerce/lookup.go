package commerce

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Products returns the products of ids that exist, each with its stock (read in one round
// trip to the inventory), keyed by product ID; unknown IDs are absent. At most
// MaxLines IDs are read at once.
func (s *Service) Products(ctx context.Context, ids []string) (map[string]Product, error) {
	if len(ids) > MaxLines {
		return nil, invalid("ProductIDs", fmt.Sprintf("at most %d at once, not %d", MaxLines, len(ids)))
	}
	for _, id := range ids {
		if err := checkProductID(id); err != nil {
			return nil, err
		}
	}
	out := make(map[string]Product, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	var rows []productRow
	if err := s.db.NewSelect().Model(&rows).Where("id IN (?)", bun.List(ids)).Scan(ctx); err != nil {
		return nil, fmt.Errorf("commerce: read products: %w", sqlutil.Unavailable(s.db, err))
	}
	found := make([]string, len(rows))
	for i := range rows {
		found[i] = rows[i].ID
	}
	stocks, err := s.Stocks(ctx, found)
	if err != nil {
		return nil, err
	}
	for i := range rows {
		p := rows[i].product()
		p.Stock = stocks[p.ID]
		out[p.ID] = p
	}
	return out, nil
}

// OrderByKey returns the order PlaceOrder placed for the user under the idempotency key,
// or ErrOrderNotFound when there is none: a caller that builds the request from state it
// consumes (a cart) finds the outcome of its first attempt with it.
func (s *Service) OrderByKey(ctx context.Context, userID, key string) (Order, error) {
	if err := checkID("UserID", userID); err != nil {
		return Order{}, err
	}
	if err := checkKey(key); err != nil {
		return Order{}, err
	}
	row, err := loadOrder(ctx, s.db, orderID(userID, key))
	if err != nil {
		return Order{}, err
	}
	return row.order(), nil
}
