package commerce

import (
	"context"
	"errors"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
)

// Step boundaries of Pay, as the fault hook sees them.
const (
	StepPlaceCommit       = "place.commit"        // inside PlaceOrder's transaction, before the stock (SQL) and the commit
	StepPayStart          = "pay.start"           // before the order moves to PAYING
	StepPayPaying         = "pay.paying"          // PAYING is committed; the PG is not called yet
	StepPayApproved       = "pay.approved"        // the PG approved; nothing is completed yet
	StepPayStockCommitted = "pay.stock-committed" // (inventory outside SQL) the units are sold
	StepPayCommit         = "pay.commit"          // inside the completing transaction, before its commit
	StepPayDeclined       = "pay.declined"        // the PG declined; nothing is compensated yet
	StepPayRefundDecided  = "pay.refund-decided"  // a late approval is to be refunded
	StepPayRefunded       = "pay.refunded"        // the late approval is refunded; nothing compensated yet
	StepCompensate        = "compensate"          // inside a compensating transaction, before its commit
	StepStockPending      = "stock.pending"       // (inventory outside SQL) the order is final, its units not released/returned yet
)

// Pay pays an order PENDING_PAYMENT of req.UserID (another user's order is
// ErrOrderNotFound) and returns it as the payment left it:
//
//   - PAID: the gateway approved (or nothing was due: points alone are paid at once); the
//     stock is committed, the coupon confirmed, the points captured, the reward earned and
//     the payment-completed event written, in one transaction;
//   - PAYMENT_FAILED: the gateway declined (FailureCode is its code), or the gateway's
//     answers contradict each other and the payment is under review (FailurePaymentReview:
//     never completed on a webhook's word); the stock, the coupon and the points are given
//     back and the payment-failed event written;
//   - PAYING: the gateway's answer is not known yet (a timeout, the gateway unavailable);
//     the payment reconciler settles the payment and Recover (or Run) completes the order
//     either way.
//
// The payment plan (held points, the coupon's discount, Method for the amount due) must
// satisfy payment.Plan's method rules, else the error wraps ErrPaymentRule and the
// *payment.PlanError: BNPL pays alone and at least 10,000 won, a composite payment needs
// CARD.
//
// Exactly one of Pay, Cancel and expiry wins an order: Pay first moves it to PAYING with a
// conditional update, persisted before the gateway is called; an order already expired is
// expired on the spot (ErrOrderExpired). The payment is charged outside any transaction,
// with the payment ID "pay-<order>" as the gateway's idempotency key, so it is charged at
// most once whatever retries and crashes happen.
//
// Pay is idempotent on req.IdempotencyKey: repeating it returns the order as the first
// request left it, continuing the payment if it is still in flight; the same key with
// another method or token fails with *ConflictError. A different key for an order that is
// no longer PENDING_PAYMENT fails with *StateError.
func (s *Service) Pay(ctx context.Context, req PayRequest) (Order, error) {
	if err := checkID("OrderID", req.OrderID); err != nil {
		return Order{}, err
	}
	if err := checkID("UserID", req.UserID); err != nil {
		return Order{}, err
	}
	if err := checkKey(req.IdempotencyKey); err != nil {
		return Order{}, err
	}
	if len(req.Token) > payment.MaxTokenLen {
		return Order{}, invalid("Token", "is longer than 255 characters")
	}
	r, err := s.ownOrder(ctx, req.OrderID, Actor{UserID: req.UserID})
	if err != nil {
		return Order{}, err
	}
	if r.AmountDue == 0 {
		req.Method, req.Token = "", "" // nothing goes through the gateway
	}
	fp := fingerprint("pay", string(req.Method), req.Token)
	for {
		switch {
		case r.PayKey == req.IdempotencyKey && r.PayFingerprint != fp:
			return Order{}, &ConflictError{Kind: "payment", Key: req.IdempotencyKey}
		case r.PayKey == req.IdempotencyKey:
			return s.advance(ctx, r, true)
		case r.Status != StatusPendingPayment:
			return r.order(), &StateError{OrderID: r.ID, Op: "pay", Status: r.Status}
		}
		now := s.now()
		if micros(now) >= r.ExpiresAt {
			expired, err := s.expireOrder(ctx, r.ID)
			if err != nil {
				return Order{}, err
			}
			if expired {
				return Order{}, fmt.Errorf("%w: %s", ErrOrderExpired, r.ID)
			}
			if r, err = loadOrder(ctx, s.db, r.ID); err != nil { // a Cancel won: decide again
				return Order{}, err
			}
			continue
		}
		if r.AmountDue > 0 {
			if req.Method != payment.MethodCard && req.Method != payment.MethodBNPL {
				return Order{}, invalid("Method", "must be CARD or BNPL")
			}
			if err := s.plan(r, req.Method).Validate(); err != nil {
				return Order{}, leafError(err)
			}
		}
		if err := s.step(StepPayStart); err != nil {
			return Order{}, err
		}
		set := map[string]any{
			"status": StatusPaying, "step": stepPay, "pay_key": req.IdempotencyKey, "pay_fingerprint": fp,
			"pay_method": string(req.Method), "pay_token": req.Token,
		}
		if r.AmountDue > 0 {
			set["payment_id"] = paymentID(r.ID)
		}
		won, err := transition(ctx, s.db, r.ID, StatusPendingPayment, "", now, set)
		if err != nil {
			return Order{}, err
		}
		if r, err = loadOrder(ctx, s.db, r.ID); err != nil {
			return Order{}, err
		}
		if !won {
			continue // someone else moved it: decide again on what they left
		}
		if err := s.step(StepPayPaying); err != nil {
			return Order{}, err
		}
		return s.advance(ctx, r, true)
	}
}

// advance drives an order with pending work one step further, as far as it can go now,
// and returns it as it is then. ask says whether to ask the gateway about an unsettled
// payment (a client's request) or to leave that to the payment reconciler (recovery).
func (s *Service) advance(ctx context.Context, r *orderRow, ask bool) (Order, error) {
	var err error
	switch r.Step {
	case stepPay:
		err = s.settlePayment(ctx, r, ask)
	case stepRefund:
		err = s.refundLateApproval(ctx, r, ask)
	case stepCancel:
		err = s.settleCancel(ctx, r, ask)
	case stepRelease, stepReturn:
		err = s.finishStock(ctx, r)
	}
	if err != nil && !errors.Is(err, errLostRace) {
		return Order{}, err
	}
	now, lerr := loadOrder(ctx, s.db, r.ID)
	if lerr != nil {
		return Order{}, lerr
	}
	return now.order(), nil
}

// settlePayment learns the payment's outcome and completes or fails the order.
func (s *Service) settlePayment(ctx context.Context, r *orderRow, ask bool) error {
	if r.AmountDue == 0 {
		return s.completePaid(ctx, r)
	}
	var (
		p   payment.Payment
		err error
	)
	if !ask {
		p, err = s.pay.Get(ctx, r.PaymentID)
	}
	if ask || errors.Is(err, payment.ErrPaymentNotFound) {
		p, err = s.pay.Pay(ctx, payment.PayRequest{
			PaymentID: r.PaymentID, OrderID: r.ID, Amount: r.AmountDue, Currency: Currency,
			Method: payment.Method(r.PayMethod), Token: r.PayToken,
		})
	}
	switch {
	case p.State == payment.StateApproved:
		if err := s.step(StepPayApproved); err != nil {
			return err
		}
		return s.completePaid(ctx, r)
	case p.State == payment.StateDeclined:
		if err := s.step(StepPayDeclined); err != nil {
			return err
		}
		return s.failPayment(ctx, r, p.DeclineCode)
	case p.State == payment.StateReview:
		return s.failUnderReview(ctx, r)
	case p.State == payment.StatePartiallyRefunded || p.State == payment.StateRefunded:
		// Refunded behind the order's back: it cannot be fulfilled.
		return s.decideRefund(ctx, r, ask)
	case err == nil || errors.Is(err, payment.ErrOutcomeUnknown) || errors.Is(err, payment.ErrGatewayUnavailable):
		s.cfg.log.Info("commerce: payment not settled yet", "order", r.ID, "state", p.State, "err", err)
		return nil // PAYING until the reconciler settles it
	}
	return fmt.Errorf("commerce: pay order %s: %w", r.ID, err)
}

// completePaid turns an order whose payment was approved into PAID: the units sold, the
// coupon confirmed, the points captured, the reward earned, the event written, in one
// transaction (the units first and apart when the inventory is outside SQL). When one of
// them can no longer be done (the reservation or the hold expired meanwhile) the order is
// failed and the payment refunded instead.
func (s *Service) completePaid(ctx context.Context, r *orderRow) error {
	err := s.stock.early(ctx, func(ctx context.Context, inv *inventory.Inventory) error {
		if err := commitOp(r.ID)(ctx, inv); err != nil {
			return err
		}
		return s.step(StepPayStockCommitted)
	})
	if unfulfillable(err) {
		s.cfg.log.Warn("commerce: approved order cannot be fulfilled", "order", r.ID, "err", err)
		return s.decideRefund(ctx, r, true)
	}
	if err != nil {
		return err
	}
	now := s.now()
	reward := rewardFor(r.AmountDue, s.cfg.rewardBP)
	err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		won, err := transition(ctx, tx, r.ID, StatusPaying, stepPay, now, map[string]any{
			"status": StatusPaid, "step": "", "stock": stockCommitted, "paid_at": micros(now), "reward": reward,
		})
		if err != nil {
			return err
		}
		if !won {
			return errLostRace
		}
		if r.CouponID != "" {
			if _, err := s.coup.WithTx(tx).Confirm(ctx, r.ID); err != nil {
				return fmt.Errorf("commerce: confirm coupon of %s: %w", r.ID, err)
			}
		}
		led := s.led.WithTx(tx)
		if r.Points > 0 {
			if _, err := led.Capture(ctx, holdID(r.ID), r.Points); err != nil {
				return fmt.Errorf("commerce: capture points of %s: %w", r.ID, err)
			}
		}
		if reward > 0 {
			if _, err := led.Earn(ctx, ledger.EarnRequest{ID: rewardID(r.ID), User: r.UserID, Amount: reward, Reference: r.ID}); err != nil {
				return fmt.Errorf("commerce: earn reward of %s: %w", r.ID, err)
			}
		}
		paid := *r
		paid.Status, paid.Step, paid.Stock, paid.PaidAt, paid.Reward = StatusPaid, "", stockCommitted, micros(now), reward
		if err := s.orderEvent(ctx, tx, &paid, EventPaymentCompleted, now); err != nil {
			return err
		}
		if err := s.stock.within(ctx, tx, commitOp(r.ID)); err != nil {
			return err
		}
		return s.step(StepPayCommit)
	})
	switch {
	case err == nil:
		s.notify()
		s.observe(OutcomePaid, r.AmountDue)
		return nil
	case unfulfillable(err):
		s.cfg.log.Warn("commerce: approved order cannot be fulfilled", "order", r.ID, "err", err)
		return s.decideRefund(ctx, r, true)
	}
	return err
}

// unfulfillable reports whether err says a held resource of the order is gone.
func unfulfillable(err error) bool {
	for _, target := range []error{
		inventory.ErrReservationExpired, inventory.ErrReservationReleased, inventory.ErrReservationNotFound,
		ledger.ErrHoldExpired, ledger.ErrHoldVoided, ledger.ErrHoldNotFound,
		coupon.ErrHoldExpired, coupon.ErrRedemptionClosed, coupon.ErrRedemptionNotFound,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// rewardFor is amount × basisPoints / 10,000, rounded down, without overflow.
func rewardFor(amount, basisPoints int64) int64 {
	return amount/10_000*basisPoints + amount%10_000*basisPoints/10_000
}

// decideRefund records that an approved order cannot be fulfilled, then refunds it.
func (s *Service) decideRefund(ctx context.Context, r *orderRow, ask bool) error {
	won, err := transition(ctx, s.db, r.ID, StatusPaying, stepPay, s.now(),
		map[string]any{"step": stepRefund, "failure_code": FailureUnfulfillable})
	if err != nil {
		return err
	}
	if !won {
		return errLostRace
	}
	if err := s.step(StepPayRefundDecided); err != nil {
		return err
	}
	r.Step, r.FailureCode = stepRefund, FailureUnfulfillable
	return s.refundLateApproval(ctx, r, ask)
}

// refundLateApproval refunds the whole payment of an order that cannot be fulfilled, then
// compensates the order into PAYMENT_FAILED.
func (s *Service) refundLateApproval(ctx context.Context, r *orderRow, ask bool) error {
	if r.AmountDue > 0 {
		settled, err := s.refund(ctx, r, refundID(r.ID, 0), "order cannot be fulfilled", ask)
		if errors.Is(err, payment.ErrUnderReview) {
			// The PG contradicted the payment since: a person settles the money; the order
			// fails and gives back what it held, as any order on a payment under review.
			return s.compensate(ctx, r, StatusPaying, stepRefund, StatusPaymentFailed, EventPaymentFailed, OutcomeFailed, FailurePaymentReview)
		}
		if err != nil || !settled {
			return err
		}
		if err := s.step(StepPayRefunded); err != nil {
			return err
		}
	}
	return s.compensate(ctx, r, StatusPaying, stepRefund, StatusPaymentFailed, EventPaymentFailed, OutcomeFailed, r.FailureCode)
}

// failPayment compensates an order whose payment was declined into PAYMENT_FAILED.
func (s *Service) failPayment(ctx context.Context, r *orderRow, code string) error {
	if code == "" {
		code = "DECLINED"
	}
	return s.compensate(ctx, r, StatusPaying, stepPay, StatusPaymentFailed, EventPaymentFailed, OutcomeFailed, code)
}

// refund asks for (ask) or looks up the refund id of the order's whole payment and
// reports whether it succeeded; false with a nil error means it is still with the PG.
// A rejected refund is an error wrapping payment.ErrRefundRejected.
func (s *Service) refund(ctx context.Context, r *orderRow, id, reason string, ask bool) (bool, error) {
	var (
		rf  payment.Refund
		err error
	)
	if !ask {
		rf, err = s.pay.GetRefund(ctx, id)
	}
	if ask || errors.Is(err, payment.ErrRefundNotFound) {
		rf, err = s.pay.Refund(ctx, payment.RefundRequest{RefundID: id, PaymentID: r.PaymentID, Amount: r.AmountDue, Reason: reason})
	}
	switch {
	case rf.State == payment.RefundSucceeded:
		return true, nil
	case errors.Is(err, payment.ErrRefundRejected) || rf.State == payment.RefundFailed:
		return false, fmt.Errorf("commerce: refund %s of order %s: %w", id, r.ID, payment.ErrRefundRejected)
	case errors.Is(err, payment.ErrNotRefundable) || errors.Is(err, payment.ErrRefundExceedsAmount):
		// Refunded by other means (by hand at the PG, say): done if nothing is left.
		p, perr := s.pay.Get(ctx, r.PaymentID)
		switch {
		case perr == nil && p.State == payment.StateRefunded:
			s.cfg.log.Warn("commerce: payment was refunded by other means", "order", r.ID, "refund", id)
			return true, nil
		case perr == nil && p.State == payment.StateReview:
			// A person settles the money with the PG: no refund is made meanwhile.
			return false, fmt.Errorf("commerce: refund %s of order %s: %w: %w", id, r.ID, payment.ErrRefundRejected, payment.ErrUnderReview)
		}
	case err == nil || errors.Is(err, payment.ErrOutcomeUnknown) || errors.Is(err, payment.ErrGatewayUnavailable) ||
		errors.Is(err, payment.ErrRefundInProgress):
		s.cfg.log.Info("commerce: refund not settled yet", "order", r.ID, "refund", id, "err", err)
		return false, nil
	}
	return false, fmt.Errorf("commerce: refund %s of order %s: %w", id, r.ID, err)
}
