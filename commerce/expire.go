package commerce

import (
	"context"
	"errors"
	"fmt"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Expire expires every unpaid order past its deadline, by the Service's clock: each becomes
// EXPIRED in one transaction with its compensation (stock released, coupon restored, points
// hold voided) and its order-expired event. It returns how many it expired. An order that a
// Pay or Cancel wins meanwhile is left to them; one that fails does not stop the others
// (the error returned joins the failures). Run calls it every sweep interval.
func (s *Service) Expire(ctx context.Context) (int, error) {
	const batch = 100
	var (
		n      int
		errs   []error
		lastAt int64 = -1
		lastID string
	)
	now := micros(s.now())
	for {
		var rows []orderRow
		err := s.db.NewSelect().Model(&rows).Column("id", "expires_at").
			Where("status = ?", StatusPendingPayment).Where("expires_at <= ?", now).
			Where("(expires_at > ? OR (expires_at = ? AND id > ?))", lastAt, lastAt, lastID).
			OrderExpr("expires_at, id").Limit(batch).Scan(ctx)
		if err != nil {
			return n, errors.Join(append(errs, fmt.Errorf("commerce: list due orders: %w", sqlutil.Unavailable(s.db, err)))...)
		}
		for _, r := range rows {
			lastAt, lastID = r.ExpiresAt, r.ID
			ok, err := s.expireOrder(ctx, r.ID)
			if err != nil {
				if ctx.Err() != nil {
					return n, ctx.Err()
				}
				errs = append(errs, fmt.Errorf("commerce: expire %s: %w", r.ID, err))
			}
			if ok {
				n++
			}
		}
		if len(rows) < batch {
			return n, errors.Join(errs...)
		}
	}
}

// expireOrder expires one order if it is still unpaid and due, and reports whether it did.
func (s *Service) expireOrder(ctx context.Context, id string) (bool, error) {
	r, err := loadOrder(ctx, s.db, id)
	if err != nil {
		return false, err
	}
	if r.Status != StatusPendingPayment || r.ExpiresAt > micros(s.now()) {
		return false, nil
	}
	err = s.closeUnpaid(ctx, r, StatusExpired, EventOrderExpired, OutcomeExpired, "")
	if errors.Is(err, errLostRace) {
		return false, nil
	}
	return err == nil, err
}
