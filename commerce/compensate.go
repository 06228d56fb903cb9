package commerce

import (
	"context"
	"errors"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/ledger"
)

// compensate moves an unpaid order from (from, fromStep) to the final status to and gives
// everything it holds back, in one transaction: the coupon restored, the points hold
// voided, the stock released (with an inventory outside SQL: right after, recorded as
// step "release" until done), and the event written. The conditional transition first in
// the transaction decides the winner among racing flows; a loser changes nothing and gets
// errLostRace.
func (s *Service) compensate(ctx context.Context, r *orderRow, from Status, fromStep string, to Status,
	event string, outcome Outcome, failureCode string) error {
	now := s.now()
	next := *r
	next.Status, next.Step, next.Stock, next.ClosedAt, next.FailureCode = to, s.stock.later(stepRelease), stockReleased, micros(now), failureCode
	set := map[string]any{"status": to, "step": next.Step, "stock": stockReleased, "closed_at": next.ClosedAt,
		"failure_code": failureCode}
	err := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		won, err := transition(ctx, tx, r.ID, from, fromStep, now, set)
		if err != nil {
			return err
		}
		if !won {
			return errLostRace
		}
		if err := s.restoreCoupon(ctx, tx, r); err != nil {
			return err
		}
		if r.Points > 0 {
			if err := voidPoints(ctx, s.led.WithTx(tx), r.ID); err != nil {
				return err
			}
		}
		if err := s.orderEvent(ctx, tx, &next, event, now); err != nil {
			return err
		}
		if err := s.stock.within(ctx, tx, releaseOp(&next)); err != nil {
			return err
		}
		if next.Stock != stockReleased {
			if _, err := tx.NewUpdate().Model((*orderRow)(nil)).Set("stock = ?", next.Stock).Where("id = ?", r.ID).Exec(ctx); err != nil {
				return fmt.Errorf("commerce: update order %s: %w", r.ID, err)
			}
		}
		return s.step(StepCompensate)
	})
	if err != nil {
		return err
	}
	s.notify()
	s.observe(outcome, r.AmountDue)
	*r = next
	if r.Step == "" {
		return nil
	}
	if err := s.step(StepStockPending); err != nil {
		return err
	}
	s.finishStockLater(ctx, r)
	return nil
}

func (s *Service) restoreCoupon(ctx context.Context, tx bun.Tx, r *orderRow) error {
	if r.CouponID == "" {
		return nil
	}
	if _, err := s.coup.WithTx(tx).Restore(ctx, r.ID); err != nil && !errors.Is(err, coupon.ErrRedemptionNotFound) {
		return fmt.Errorf("commerce: restore coupon of %s: %w", r.ID, err)
	}
	return nil
}

// voidPoints gives an unpaid order's held points back; a hold already voided, or expired
// (its points are given back by the ledger's sweep), needs nothing more.
func voidPoints(ctx context.Context, led *ledger.Ledger, order string) error {
	_, err := led.Void(ctx, holdID(order))
	if err == nil || errors.Is(err, ledger.ErrHoldVoided) || errors.Is(err, ledger.ErrHoldExpired) {
		return nil
	}
	return fmt.Errorf("commerce: void points of %s: %w", order, err)
}

// finishStock does the stock work left after a final transition when the inventory is
// outside SQL (step release or return), then clears the step.
func (s *Service) finishStock(ctx context.Context, r *orderRow) error {
	done := *r
	op := returnOp(&done)
	if r.Step == stepRelease {
		op = releaseOp(&done)
	}
	if err := op(ctx, s.inv); err != nil {
		return err
	}
	stock := done.Stock
	won, err := transition(ctx, s.db, r.ID, r.Status, r.Step, s.now(), map[string]any{"step": "", "stock": stock})
	if err != nil {
		return err
	}
	if !won {
		return errLostRace
	}
	r.Step, r.Stock = "", stock
	return nil
}

// finishStockLater finishes the stock work of an order that is already final; a failure
// (the inventory unreachable, say) is logged and left to Recover, since the order's outcome
// is decided and committed.
func (s *Service) finishStockLater(ctx context.Context, r *orderRow) {
	if err := s.finishStock(ctx, r); err != nil && !errors.Is(err, errLostRace) {
		s.cfg.log.Warn("commerce: stock work left to recovery", "order", r.ID, "step", r.Step, "err", err)
	}
}
