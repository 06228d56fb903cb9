package commerce

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/hold"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
)

// Step boundaries of Cancel, as the fault hook sees them (with StepCompensate and
// StepStockPending, shared with the other compensations).
const (
	StepCancelStart      = "cancel.start"      // before the order leaves PENDING_PAYMENT or PAID
	StepCancelCancelling = "cancel.cancelling" // CANCELLING, the reward clawback and its shortfall are committed; nothing refunded yet
	StepCancelRefunded   = "cancel.refunded"   // the PG refunded the payment; nothing else yet
	StepCancelCommit     = "cancel.commit"     // inside the cancelling transaction, before its commit
)

// FailureRefundRejected is the FailureCode of a PAID order whose cancellation failed
// because the PG refused the refund.
const FailureRefundRejected = "REFUND_REJECTED"

// Cancel cancels an order on behalf of its owner or an administrator (anyone else gets
// ErrOrderNotFound, so order IDs do not leak) and returns it:
//
//   - PENDING_PAYMENT: CANCELLED at once, in one transaction with the compensation (the
//     stock released, the coupon restored, the points hold voided) and the order-cancelled
//     event.
//   - PAID, within the cancel window (WithCancelWindow, 24 hours after payment by default;
//     later: *CancelWindowError): first CANCELLING, in one transaction with the clawback of
//     the reward points the order earned — all of them, or what the user still has if they
//     spent some: the rest, the shortfall (Order.RewardShortfall), is recorded with the
//     order and deducted from what the cancellation refunds, first from the points the
//     order was paid with, then from its payment (Order.RefundPoints, Order.RefundAmount);
//     then the payment is refunded through the PG, in full or in part (refund ID
//     "refund-<order>-<attempt>"; no refund when nothing of it is left; less what was
//     refunded of the payment by other means, an operator's refund, say); then, in one
//     transaction, the points are refunded, the coupon restored, the units returned to
//     stock, the order CANCELLED and the order-cancelled event written (with the amounts
//     refunded). If the PG has not answered the refund yet the order stays CANCELLING and
//     Recover completes it; if the PG rejects it, or the payment is under review
//     (payment.ErrUnderReview: no refund until a person decides), the order goes back to
//     PAID, the clawback is refunded, and Cancel fails with ErrRefundRejected.
//   - CANCELLING or CANCELLED: the cancellation is continued or returned (idempotent).
//   - PAYING (a payment in flight), PAYMENT_FAILED, EXPIRED: *StateError.
func (s *Service) Cancel(ctx context.Context, orderID string, by Actor) (Order, error) {
	if err := checkID("OrderID", orderID); err != nil {
		return Order{}, err
	}
	r, err := s.ownOrder(ctx, orderID, by)
	if err != nil {
		return Order{}, err
	}
	for {
		switch r.Status {
		case StatusPendingPayment:
			if err := s.step(StepCancelStart); err != nil {
				return Order{}, err
			}
			err = s.closeUnpaid(ctx, r, StatusCancelled, EventOrderCancelled, OutcomeCancelled, "")
		case StatusPaid:
			now := s.now()
			if deadline := fromMicros(r.PaidAt).Add(s.cfg.cancelWindow); !now.Before(deadline) {
				return r.order(), &CancelWindowError{OrderID: r.ID, PaidAt: fromMicros(r.PaidAt), Deadline: deadline}
			}
			if err := s.step(StepCancelStart); err != nil {
				return Order{}, err
			}
			if err = s.beginCancel(ctx, r, now); err == nil {
				return s.resume(ctx, r, true)
			}
		case StatusCancelling, StatusCancelled:
			return s.resume(ctx, r, true)
		default:
			return r.order(), &StateError{OrderID: r.ID, Op: "cancel", Status: r.Status}
		}
		if !errors.Is(err, errLostRace) {
			if err != nil {
				return Order{}, err
			}
			return s.current(ctx, r.ID)
		}
		if r, err = loadOrder(ctx, s.db, r.ID); err != nil { // someone else moved it: decide again
			return Order{}, err
		}
	}
}

// beginCancel moves a PAID order to CANCELLING and claws its reward back, in one
// transaction.
func (s *Service) beginCancel(ctx context.Context, r *orderRow, now time.Time) error {
	err := s.move(ctx, r, now, func(n *orderRow) {
		n.Status, n.Step, n.CancelAttempt, n.FailureCode = StatusCancelling, stepCancel, r.CancelAttempt+1, ""
	}, step{do: s.clawBack})
	if err != nil {
		return err
	}
	return s.step(StepCancelCancelling)
}

// clawBack takes back, in tx, the reward points the order earned, or as many as the user
// still has when they spent some (one Spend, "clawback-<order>-<attempt>"), and records
// in next the shortfall: what it could not take back. The shortfall is never more than
// what the cancellation refunds, since the reward is at most the amount paid
// (WithRewardRate ≤ 100%); for an order whose reward was more (a row written by something
// else) it can be, and then the cancellation is refused with ErrRewardSpent: the
// transaction rolls back, nothing changes.
func (s *Service) clawBack(ctx context.Context, tx bun.Tx, next *orderRow) error {
	take := next.Reward
	// At most two tries: the reward, then what the refusal said the user has. A second
	// refusal means the user's points changed in between (they are spending): the client
	// retries the cancellation.
	for try := 0; take > 0; try++ {
		_, err := s.led.WithTx(tx).Spend(ctx, ledger.SpendRequest{
			ID: clawbackID(next.ID, next.CancelAttempt), User: next.UserID, Amount: take, Reference: next.ID,
		})
		var short *ledger.InsufficientPointsError
		if err == nil {
			break
		}
		if !errors.As(err, &short) || try > 0 {
			return fmt.Errorf("commerce: claw back reward of %s: %w", next.ID, err)
		}
		take = min(short.Available, take)
	}
	next.Shortfall = next.Reward - take
	if paid := next.Points + next.AmountDue; next.Shortfall > paid {
		return fmt.Errorf("%w: order %s: %d of its reward of %d points were spent, more than the %d it would refund",
			ErrRewardSpent, next.ID, next.Shortfall, next.Reward, paid)
	}
	if next.Shortfall > 0 {
		next.Step = stepCancelShort
	}
	return nil
}

// refunds returns what giving back the paid order r refunds: its points and its payment,
// less the reward shortfall of its cancellation, taken from the points first, then from
// the payment (the shortfall is zero but in a cancellation).
func (r *orderRow) refunds() (points, amount int64) {
	fromPoints := min(r.Shortfall, r.Points)
	return r.Points - fromPoints, r.AmountDue - (r.Shortfall - fromPoints)
}

// settleCancel refunds a CANCELLING order's payment (less what the reward's shortfall
// leaves of it; nothing when that is nothing) and, once the PG has refunded it, completes
// the cancellation in one transaction: the points captured refunded (less the rest of the
// shortfall), the coupon restored, the units returned (in SQL, or under step "return" right
// after), the event written.
func (s *Service) settleCancel(ctx context.Context, r *orderRow, ask bool) error {
	if _, amount := r.refunds(); amount > 0 {
		settled, err := s.refund(ctx, r, refundID(r.ID, r.CancelAttempt), "order cancelled", ask)
		if errors.Is(err, payment.ErrRefundRejected) {
			return s.revertCancel(ctx, r, err)
		}
		if err != nil || !settled {
			return err
		}
		if err := s.step(StepCancelRefunded); err != nil {
			return err
		}
	}
	now := s.now()
	return s.move(ctx, r, now, func(n *orderRow) {
		n.Status, n.Step, n.Stock, n.ClosedAt = StatusCancelled, s.stock.later(stepReturn), stockReturned, micros(now)
	}, step{do: s.undoPaid, event: EventOrderCancelled, fault: StepCancelCommit, outcome: OutcomeCancelled})
}

// undoPaid gives back, in tx, what a paid order took: its points refunded (less the
// reward's shortfall), its coupon restored, its units returned (in SQL).
func (s *Service) undoPaid(ctx context.Context, tx bun.Tx, next *orderRow) error {
	if points, _ := next.refunds(); points > 0 {
		if _, err := s.led.WithTx(tx).Refund(ctx, ledger.RefundRequest{
			ID: pointsRefundID(next.ID), SpendID: holdID(next.ID), Amount: points, Reference: next.ID,
		}); err != nil {
			return fmt.Errorf("commerce: refund points of %s: %w", next.ID, err)
		}
	}
	if next.CouponID != "" {
		if err := s.coupons(tx).Return(ctx, next.ID); err != nil && !errors.Is(err, hold.ErrGone) {
			return err
		}
	}
	return s.stock.within(ctx, tx, returnOp(next))
}

// revertCancel puts an order whose refund the PG rejected back to PAID (without a
// shortfall) and refunds the reward clawback, in one transaction, and returns an error
// wrapping ErrRefundRejected.
func (s *Service) revertCancel(ctx context.Context, r *orderRow, cause error) error {
	clawed := r.Reward - r.Shortfall
	err := s.move(ctx, r, s.now(), func(n *orderRow) {
		n.Status, n.Step, n.FailureCode, n.Shortfall = StatusPaid, "", FailureRefundRejected, 0
	}, step{do: func(ctx context.Context, tx bun.Tx, next *orderRow) error {
		if clawed == 0 {
			return nil
		}
		_, err := s.led.WithTx(tx).Refund(ctx, ledger.RefundRequest{
			ID: clawbackRevertID(next.ID, next.CancelAttempt), SpendID: clawbackID(next.ID, next.CancelAttempt),
			Amount: clawed, Reference: next.ID,
		})
		if err != nil {
			return fmt.Errorf("commerce: refund reward clawback of %s: %w", next.ID, err)
		}
		return nil
	}})
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: %w", ErrRefundRejected, cause)
}
