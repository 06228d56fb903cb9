package coupon

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/observe"
)

// sweepBatch is how many expired holds Sweep reads at a time.
const sweepBatch = 100

// ReserveOption configures one Reserve.
type ReserveOption func(*reserveOptions)

type reserveOptions struct {
	deadline time.Time
}

// HoldUntil gives the reservation a deadline: past it, Confirm fails with ErrHoldExpired and
// Sweep restores the coupon (the redemption ends Expired). Without it a reservation lasts
// until Confirm or Restore. The deadline must be in the future and, in UTC, no later than
// year 9999.
func HoldUntil(deadline time.Time) ReserveOption {
	return func(o *reserveOptions) { o.deadline = deadline }
}

// Reserve reserves the coupon for the order: the first step of checkout. Only the coupon's
// owner may reserve it, only while it is available (not reserved or used by another order),
// usable (past UsableFrom) and not expired, and only for an order of at least the coupon's
// MinOrderAmount. The returned redemption carries the discount, fixed now.
//
// Reserve is idempotent on (orderID, couponID): reserving again for the same order returns
// the same redemption (ErrRedemptionConflict if the order amount differs; ErrRedemptionClosed
// once the redemption was restored). Of two orders racing for one coupon exactly one wins;
// the other gets ErrNotAvailable. One order may reserve several coupons.
//
// Through WithTx(tx) it joins the caller's transaction. Rejections are *RedeemError.
func (s *Service) Reserve(ctx context.Context, couponID, userID, orderID string, orderAmount int64, opts ...ReserveOption) (red Redemption, err error) {
	start := time.Now()
	defer func() { s.observe(OpReserve, "", start, err) }()
	for _, arg := range [][2]string{{"couponID", couponID}, {"userID", userID}, {"orderID", orderID}} {
		if err := validateID(arg[0], arg[1]); err != nil {
			return Redemption{}, err
		}
	}
	if orderAmount <= 0 {
		return Redemption{}, invalidArg("orderAmount", "must be positive")
	}
	var o reserveOptions
	for _, opt := range opts {
		opt(&o)
	}
	now := s.now()
	deadline := utc(o.deadline)
	if !deadline.IsZero() && !deadline.After(now) {
		return Redemption{}, invalidArg("HoldUntil", "must be in the future")
	}
	if !storable(deadline) {
		return Redemption{}, invalidArg("HoldUntil", "must fall within years 1 to 9999 in UTC")
	}
	err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		red, err = reserve(ctx, tx, couponID, userID, orderID, orderAmount, deadline, now)
		return err
	})
	return red, fail("reserving", err)
}

func reserve(ctx context.Context, tx bun.Tx, couponID, userID, orderID string, amount int64, deadline, now time.Time) (Redemption, error) {
	reject := func(e *RedeemError) (Redemption, error) {
		e.CouponID, e.OrderID = couponID, orderID
		return Redemption{}, e
	}
	// Locking the coupon first serialises everything that touches it.
	c, found, err := couponWhere(ctx, tx, true, "id = ?", couponID)
	switch {
	case err != nil:
		return Redemption{}, err
	case !found:
		return reject(&RedeemError{Err: ErrCouponNotFound})
	case c.UserID != userID:
		return reject(&RedeemError{Err: ErrNotOwner})
	case c.OrderID == orderID && (c.State == StateReserved || c.State == StateUsed):
		red, found, err := redemption(ctx, tx, orderID, couponID)
		if err != nil {
			return Redemption{}, err
		}
		if !found {
			return Redemption{}, fmt.Errorf("coupon: coupon %q is held by order %q without a redemption", couponID, orderID)
		}
		if red.OrderAmount != amount {
			return reject(&RedeemError{Err: ErrRedemptionConflict, OrderAmount: red.OrderAmount})
		}
		return red, nil
	case c.State != StateAvailable:
		return reject(&RedeemError{Err: ErrNotAvailable, State: string(c.State)})
	case !c.UsableFrom.IsZero() && now.Before(c.UsableFrom):
		return reject(&RedeemError{Err: ErrNotYetUsable, At: c.UsableFrom})
	case c.expired(now):
		return reject(&RedeemError{Err: ErrExpired, State: string(StateExpired), At: c.ExpiresAt})
	case amount < c.MinOrderAmount:
		return reject(&RedeemError{Err: ErrBelowMinimum, MinOrderAmount: c.MinOrderAmount, OrderAmount: amount})
	}
	red := Redemption{
		OrderID: orderID, CouponID: couponID, UserID: userID, TemplateID: c.TemplateID,
		OrderAmount: amount, Discount: Discount(c, amount), State: RedemptionReserved,
		HoldDeadline: deadline, ReservedAt: now,
	}
	if _, err := tx.NewInsert().Model(toRedemptionRow(red)).Exec(ctx); err != nil {
		if !sqlutil.IsDuplicateKey(err) {
			return Redemption{}, err
		}
		// The order reserved this coupon before and that redemption was resolved.
		prev, _, err := redemption(ctx, tx, orderID, couponID)
		if err != nil {
			return Redemption{}, err
		}
		return reject(&RedeemError{Err: ErrRedemptionClosed, State: string(prev.State)})
	}
	res, err := tx.NewUpdate().Model((*couponRow)(nil)).
		Set("state = ?", StateReserved).Set("order_id = ?", orderID).
		Where("id = ?", couponID).Where("state = ?", StateAvailable).Exec(ctx)
	if err != nil {
		return Redemption{}, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return Redemption{}, err
	}
	if n != 1 {
		return reject(&RedeemError{Err: ErrNotAvailable})
	}
	return red, nil
}

// Confirm confirms every reservation of the order: its coupons become used. It is
// idempotent: confirming a confirmed order returns the same redemptions. It fails, changing
// nothing, with ErrRedemptionNotFound when the order reserved nothing, ErrRedemptionClosed
// when a redemption was restored, and ErrHoldExpired when a reservation passed its
// deadline. Through WithTx(tx) it joins the caller's transaction.
func (s *Service) Confirm(ctx context.Context, orderID string) ([]Redemption, error) {
	return s.resolveOrder(ctx, OpConfirm, "confirming", orderID, RedemptionConfirmed, refuseConfirm,
		func(r Redemption) bool { return r.State == RedemptionReserved })
}

// ConfirmCoupon is Confirm of the order's reservation of one coupon, for an order that
// reserves only that coupon (as checkout's orders do): it confirms the same way, is as
// idempotent and fails, changing nothing, with the same errors (ErrRedemptionNotFound when
// the order did not reserve that coupon), but returns no redemption and needs no read while
// the reservation is still held: conditional updates confirm it, and only when they do not
// apply does a locking read decide the answer. Through WithTx(tx) it joins the caller's
// transaction.
func (s *Service) ConfirmCoupon(ctx context.Context, orderID, couponID string) (err error) {
	start := time.Now()
	defer func() { s.observe(OpConfirm, "", start, err) }()
	for _, arg := range [][2]string{{"orderID", orderID}, {"couponID", couponID}} {
		if err := validateID(arg[0], arg[1]); err != nil {
			return err
		}
	}
	now := s.now()
	err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*redemptionRow)(nil)).
			Set("state = ?", RedemptionConfirmed).Set("resolved_at = ?", now).
			Where("order_id = ?", orderID).Where("coupon_id = ?", couponID).Where("state = ?", RedemptionReserved).
			Where("(hold_deadline IS NULL OR hold_deadline > ?)", now).Exec(ctx)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 1 {
			return resolveCoupon(ctx, tx, couponID, orderID, RedemptionConfirmed, now)
		}
		// Not held (or past its deadline): decide as Confirm does, under the lock.
		r, found, err := redemption(ctx, tx, orderID, couponID)
		switch {
		case err != nil:
			return err
		case !found:
			return &RedeemError{Err: ErrRedemptionNotFound, CouponID: couponID, OrderID: orderID}
		}
		if err := refuseConfirm(r, now); err != nil {
			return err
		}
		// Held after all: a reservation committed after the update looked, which a caller's
		// READ COMMITTED transaction (no gap locks) lets in.
		if r.State == RedemptionReserved {
			return resolve(ctx, tx, &r, RedemptionConfirmed, now)
		}
		return nil
	})
	return fail("confirming", err)
}

// refuseConfirm is the error confirming r at now fails with (nil when it may be confirmed,
// or was).
func refuseConfirm(r Redemption, now time.Time) error {
	switch {
	case r.State == RedemptionRestored:
		return &RedeemError{Err: ErrRedemptionClosed, CouponID: r.CouponID, OrderID: r.OrderID, State: string(r.State), At: r.HoldDeadline}
	case r.State == RedemptionExpired, r.State == RedemptionReserved && r.holdExpired(now):
		return &RedeemError{Err: ErrHoldExpired, CouponID: r.CouponID, OrderID: r.OrderID, State: string(r.State), At: r.HoldDeadline}
	}
	return nil
}

// resolveOrder runs op on the order's redemptions in one transaction: it locks them, fails
// with refuse's error for the first one refuse refuses (changing nothing), then moves each
// one that move selects to state to. doing names the operation in its errors.
func (s *Service) resolveOrder(ctx context.Context, op Op, doing, orderID string, to RedemptionState,
	refuse func(r Redemption, now time.Time) error, move func(r Redemption) bool) (reds []Redemption, err error) {
	start := time.Now()
	defer func() { s.observe(op, "", start, err) }()
	if err := validateID("orderID", orderID); err != nil {
		return nil, err
	}
	now := s.now()
	err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		if reds, err = lockRedemptions(ctx, tx, orderID); err != nil {
			return err
		}
		for _, r := range reds {
			if err := refuse(r, now); err != nil {
				return err
			}
		}
		for i := range reds {
			if move(reds[i]) {
				if err := resolve(ctx, tx, &reds[i], to, now); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fail(doing, err)
	}
	return reds, nil
}

// Restore gives the order's coupons back, whether reserved or already confirmed (the order
// failed or was cancelled): each becomes available again, and usable unless it has expired
// meanwhile. It is idempotent: restoring a restored order changes nothing and returns the
// same redemptions. ErrRedemptionNotFound when the order reserved nothing. Through
// WithTx(tx) it joins the caller's transaction. Release is its two-phase void, which
// refuses a confirmed coupon.
func (s *Service) Restore(ctx context.Context, orderID string) (reds []Redemption, err error) {
	return s.restore(ctx, orderID, true)
}

// restore restores the order's reserved coupons, and its confirmed ones if confirmed; else
// a confirmed one fails it with a *RedeemError matching ErrRedemptionConfirmed.
func (s *Service) restore(ctx context.Context, orderID string, confirmed bool) ([]Redemption, error) {
	return s.resolveOrder(ctx, OpRestore, "restoring", orderID, RedemptionRestored,
		func(r Redemption, _ time.Time) error {
			if r.State == RedemptionConfirmed && !confirmed {
				return &RedeemError{Err: ErrRedemptionConfirmed, CouponID: r.CouponID, OrderID: orderID, State: string(r.State)}
			}
			return nil
		},
		func(r Redemption) bool { return r.State == RedemptionReserved || r.State == RedemptionConfirmed })
}

// Redemptions returns the order's redemptions (none: an empty slice).
func (s *Service) Redemptions(ctx context.Context, orderID string) ([]Redemption, error) {
	if err := validateID("orderID", orderID); err != nil {
		return nil, err
	}
	var rows []redemptionRow
	if err := s.db.NewSelect().Model(&rows).Where("order_id = ?", orderID).Order("coupon_id").Scan(ctx); err != nil {
		return nil, fail("reading redemptions", err)
	}
	return toRedemptions(rows), nil
}

// Sweep restores every reservation past its hold deadline (each ends Expired) and returns
// how many it restored. Each is restored in a transaction of its own; one that was
// confirmed or restored meanwhile is left alone.
func (s *Service) Sweep(ctx context.Context) (n int, err error) {
	start := time.Now()
	defer func() {
		s.observe(OpSweep, "", start, err)
		if n > 0 {
			s.observer.Observe(observe.Expired("coupon", "reservation", n))
		}
	}()
	now := s.now()
	for {
		var due []redemptionRow
		err := s.db.NewSelect().Model(&due).Column("order_id", "coupon_id").
			Where("state = ?", RedemptionReserved).Where("hold_deadline <= ?", now).
			Order("hold_deadline").Limit(sweepBatch).Scan(ctx)
		if err != nil {
			return n, fail("sweeping", err)
		}
		for _, d := range due {
			var expired bool
			err := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
				expired = false
				r, found, err := redemption(ctx, tx, d.OrderID, d.CouponID)
				if err != nil || !found || r.State != RedemptionReserved || !r.holdExpired(now) {
					return err
				}
				expired = true
				return resolve(ctx, tx, &r, RedemptionExpired, now)
			})
			if err != nil {
				return n, fail("sweeping", err)
			}
			if expired {
				n++
			}
		}
		if len(due) < sweepBatch {
			return n, nil
		}
	}
}

// Run sweeps expired holds every interval until ctx is done, then returns nil. Sweep errors
// are logged and retried at the next tick.
func (s *Service) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return invalidArg("interval", "must be positive")
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if n, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("coupon: sweep failed", "err", err)
		} else if n > 0 {
			s.log.Info("coupon: restored expired reservations", "count", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

func (r Redemption) holdExpired(now time.Time) bool {
	return !r.HoldDeadline.IsZero() && !now.Before(r.HoldDeadline)
}

// resolve moves a redemption and its coupon to the state to: Confirmed makes the coupon
// used; Restored and Expired make it available again.
func resolve(ctx context.Context, tx bun.Tx, r *Redemption, to RedemptionState, now time.Time) error {
	if err := resolveCoupon(ctx, tx, r.CouponID, r.OrderID, to, now); err != nil {
		return err
	}
	_, err := tx.NewUpdate().Model((*redemptionRow)(nil)).Set("state = ?", to).Set("resolved_at = ?", now).
		Where("order_id = ?", r.OrderID).Where("coupon_id = ?", r.CouponID).Exec(ctx)
	if err != nil {
		return err
	}
	r.State, r.ResolvedAt = to, now
	return nil
}

// resolveCoupon moves the coupon the order holds as its redemption moves to the state to
// (see resolve).
func resolveCoupon(ctx context.Context, tx bun.Tx, couponID, orderID string, to RedemptionState, now time.Time) error {
	q := tx.NewUpdate().Model((*couponRow)(nil)).Where("id = ?", couponID).Where("order_id = ?", orderID)
	if to == RedemptionConfirmed {
		q = q.Set("state = ?", StateUsed).Set("used_at = ?", now).Where("state = ?", StateReserved)
	} else {
		q = q.Set("state = ?", StateAvailable).Set("order_id = NULL").Set("used_at = NULL").
			Where("state IN (?)", bun.List([]State{StateReserved, StateUsed}))
	}
	res, err := q.Exec(ctx)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("coupon: coupon %q is not held by order %q as its redemption says", couponID, orderID)
	}
	return nil
}

// redemption reads one redemption with a locking read (on MySQL).
func redemption(ctx context.Context, tx bun.IDB, orderID, couponID string) (Redemption, bool, error) {
	var row redemptionRow
	q := tx.NewSelect().Model(&row).Where("order_id = ?", orderID).Where("coupon_id = ?", couponID)
	switch err := sqlutil.ForUpdate(q).Scan(ctx); {
	case sqlutil.IsNoRows(err):
		return Redemption{}, false, nil
	case err != nil:
		return Redemption{}, false, err
	}
	return row.redemption(), true, nil
}

// lockRedemptions reads the order's redemptions with a locking read (on MySQL);
// ErrRedemptionNotFound when there are none. It lists their coupons with a plain read,
// then locks each redemption by its primary key: a locking read of the order ID alone
// scans the primary key's range for it and may next-key lock the first redemption of the
// next order and the gap before it, so another user's Reserve would wait for this
// transaction (in a caller's transaction, for as long as the caller keeps it open). Only
// when the plain read finds none (the caller's snapshot may be older than the
// reservation) does it read the order's range with a locking read, which sees what is
// committed.
func lockRedemptions(ctx context.Context, tx bun.Tx, orderID string) ([]Redemption, error) {
	var couponIDs []string
	err := tx.NewSelect().Model((*redemptionRow)(nil)).Column("coupon_id").Where("order_id = ?", orderID).Scan(ctx, &couponIDs)
	if err != nil {
		return nil, err
	}
	var rows []redemptionRow
	q := tx.NewSelect().Model(&rows)
	if len(couponIDs) > 0 {
		q = sqlutil.SelectByPK(tx, &rows).Where("coupon_id IN (?)", bun.List(couponIDs))
	}
	if err := sqlutil.ForUpdate(q.Where("order_id = ?", orderID).Order("coupon_id")).Scan(ctx); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, &RedeemError{Err: ErrRedemptionNotFound, OrderID: orderID}
	}
	return toRedemptions(rows), nil
}

func toRedemptions(rows []redemptionRow) []Redemption {
	out := make([]Redemption, len(rows))
	for i := range rows {
		out[i] = rows[i].redemption()
	}
	return out
}
