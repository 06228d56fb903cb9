package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/observe"
)

// Sweep resolves what is due by the ledger's clock and returns how many it resolved:
// first every pending hold past its deadline is released (held → user, state
// HoldExpired), then every lot of earned points past its expiry, oldest first, leaves the
// balance (user → @expired). Each is resolved in a transaction of its own, at most once
// even when several sweepers run at the same time.
//
// Expiry never takes held points: when part of an expired lot is held, only the available
// part expires and the lot stays due. If the hold is then captured, the capture uses the
// expired lot first; if it is voided or expires, the next Sweep expires those points.
// Until a Sweep runs, due points remain in the balance and can be spent.
func (l *Ledger) Sweep(ctx context.Context) (int, error) {
	now := l.now()
	holds, err := l.sweepHolds(ctx, now)
	lots := 0
	if err == nil {
		lots, err = l.sweepLots(ctx, now)
	}
	if holds+lots > 0 {
		if holds > 0 {
			l.obs.Observe(observe.Expired("ledger", "hold", holds))
		}
		if lots > 0 {
			l.obs.Observe(observe.Expired("ledger", "lot", lots))
		}
		l.log.InfoContext(ctx, "ledger sweep", "holds_expired", holds, "lots_expired", lots)
	}
	return holds + lots, l.translate(ctx, "sweep", err)
}

// Run sweeps at once and then every interval (WithSweepInterval, one second by default)
// until ctx is done, then returns nil. Sweep errors are logged, and the next tick tries
// again. Run it in its own goroutine.
func (l *Ledger) Run(ctx context.Context) error {
	tick := time.NewTicker(l.sweepEvery)
	defer tick.Stop()
	for {
		if _, err := l.Sweep(ctx); err != nil && ctx.Err() == nil {
			l.log.ErrorContext(ctx, "ledger sweep failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (l *Ledger) sweepHolds(ctx context.Context, now time.Time) (int, error) {
	n := 0
	for {
		var ids []string
		err := l.db.NewSelect().Model((*holdRow)(nil)).Column("id").
			Where("h.state = ?", HoldPending).Where("h.deadline <= ?", now).
			OrderExpr("h.deadline, h.id").Limit(int64(l.sweepBatch)).Scan(ctx, &ids)
		if err != nil {
			return n, err
		}
		for _, id := range ids {
			expired := false
			err := sqlutil.InTx(ctx, l.db, func(ctx context.Context, tx bun.Tx) error {
				h, found, err := findHold(ctx, tx, id)
				if err != nil || !found || h.State != HoldPending || now.Before(h.Deadline) {
					return err // resolved meanwhile
				}
				_, err = settle(ctx, tx, &h, 0, HoldExpired, now)
				expired = err == nil
				return err
			})
			if err != nil {
				return n, err
			}
			if expired {
				n++
			}
		}
		if len(ids) < l.sweepBatch {
			return n, nil
		}
	}
}

// sweepLots pages through the due lots in expiry order; a lot whose points are held stays
// due, so the pages move on by (expires_at, id) rather than waiting for it.
func (l *Ledger) sweepLots(ctx context.Context, now time.Time) (int, error) {
	n := 0
	var last *lotRow
	for {
		var lots []lotRow
		q := l.db.NewSelect().Model(&lots).Where("l.expires_at <= ?", now)
		if last != nil {
			q = q.Where("(l.expires_at > ? OR (l.expires_at = ? AND l.id > ?))", last.ExpiresAt, last.ExpiresAt, last.ID)
		}
		if err := q.OrderExpr("l.expires_at, l.id").Limit(int64(l.sweepBatch)).Scan(ctx); err != nil {
			return n, err
		}
		for _, lot := range lots {
			expired := false
			err := sqlutil.InTx(ctx, l.db, func(ctx context.Context, tx bun.Tx) (err error) {
				expired, err = expireLot(ctx, tx, lot, now)
				return err
			})
			if err != nil {
				return n, err
			}
			if expired {
				n++
			}
		}
		if len(lots) < l.sweepBatch {
			return n, nil
		}
		last = &lots[len(lots)-1]
	}
}

// expireLot takes what is left of the due lot out of the user's available points, and
// reports whether it expired anything.
func expireLot(ctx context.Context, tx bun.Tx, due lotRow, now time.Time) (bool, error) {
	a, err := readAccount(ctx, tx, due.UserID, true)
	if err != nil {
		return false, err
	}
	lot := lotRow{ID: due.ID}
	switch err := sqlutil.ForUpdate(tx.NewSelect().Model(&lot).WherePK()).Scan(ctx); {
	case sqlutil.IsNoRows(err):
		return false, nil // used up meanwhile
	case err != nil:
		return false, err
	}
	x := min(lot.Remaining, a.Available)
	if x == 0 || lot.ExpiresAt.After(now) {
		return false, nil
	}
	ok, err := moveAccount(ctx, tx, lot.UserID, -x, 0, now)
	if err != nil {
		return false, err
	}
	if !ok {
		return false, fmt.Errorf("%w: account %q changed under its lock", ErrConflict, lot.UserID)
	}
	if err := takeFromLot(ctx, tx, lot, x); err != nil {
		return false, err
	}
	if err := reduceExpiring(ctx, tx, lot.UserID, x, now); err != nil {
		return false, err
	}
	t := &transferRow{Kind: TypeExpire, UserID: lot.UserID, Src: UserAccount(lot.UserID), Dst: AccountExpired,
		Amount: x, AvailableAfter: a.Available - x, HeldAfter: a.Held, ParentID: lot.ID, CreatedAt: now}
	return true, insertTransfer(ctx, tx, t)
}
