package commerce

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/hold"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
)

// Step boundaries of Pay, as the fault hook sees them.
const (
	StepPlaceCommit       = "place.commit"        // inside PlaceOrder's transaction, before the stock (SQL) and the commit
	StepPayStart          = "pay.start"           // before the order moves to PAYING
	StepPayClaim          = "pay.claim"           // inside the transaction moving the order to PAYING and recording its payment, before its commit
	StepPayPaying         = "pay.paying"          // PAYING is committed; the PG is not called yet
	StepPayApproved       = "pay.approved"        // the PG approved; nothing is completed yet
	StepPayStockCommitted = "pay.stock-committed" // (inventory outside SQL) the units are sold
	StepPayCommit         = "pay.commit"          // inside the completing transaction, before its commit
	StepPayDeclined       = "pay.declined"        // the PG declined; nothing is compensated yet
	StepPayAbandoned      = "pay.abandoned"       // the PG was not reached and the payment is abandoned; the order is not reopened yet
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
//   - PAYING: the gateway's answer is not known yet (a timeout, a lost answer); the payment
//     reconciler settles the payment and Recover (or Run) completes the order either way.
//
// When the gateway is down Pay fails with an error matching errcode.ErrUnavailable (an HTTP
// 503 with Retry-After: its errcode.RetryAfter) and the order stays PENDING_PAYMENT with its
// holds, nothing charged:
//
//   - known to be down before anything is claimed (payment.Service.Ready: its circuit
//     breaker open), Pay fails at once, the RetryAfter the breaker's remaining delay, and
//     nothing is recorded;
//   - certainly not reached by the call (payment.ErrGatewayUnavailable: the breaker open,
//     the bulkhead full, the connection refused), the payment is abandoned
//     (payment.Service.Attempt: ABANDONED, never sent again) and the order reopened: back to
//     PENDING_PAYMENT with its pay key cleared, the RetryAfter the gateway's hint or
//     DefaultPGRetryAfter. A crash in between is finished by Recover.
//
// A later Pay, with any idempotency key (the same one included), makes a new attempt with a
// new payment.
//
// An approval that comes too late to be fulfilled (a hold of the order gone) is refunded and
// the order fails (FailureUnfulfillable). Should the PG reject that refund, Pay fails with an
// error matching errcode.ErrUnavailable and payment.ErrRefundRejected (RetryAfter
// DefaultPGRetryAfter), the order still PAYING: its retry, or Recover, makes a new refund.
//
// The payment plan (held points, the coupon's discount, Method for the amount due) must
// satisfy payment.Plan's method rules, else the error wraps ErrPaymentRule and the
// *payment.PlanError: BNPL pays alone and at least 10,000 won, a composite payment needs
// CARD.
//
// Exactly one of Pay, Cancel and expiry wins an order: Pay first moves it to PAYING with a
// conditional update, persisted before the gateway is called; an order already expired is
// expired on the spot (ErrOrderExpired). The payment is charged outside any transaction,
// with its payment ID as the gateway's idempotency key, so it is charged at most once
// whatever retries and crashes happen: "pay-<order>" for the first attempt, then
// "pay-<order>-2", "pay-<order>-3"... for attempts after abandoned ones, so that an
// abandoned payment's ID is never sent again.
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
	if err := payment.CheckToken(req.Token); err != nil {
		return Order{}, err
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
			return Order{}, NewConflictError("payment", req.IdempotencyKey)
		case r.PayKey == req.IdempotencyKey:
			return s.resume(ctx, r, true)
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
			// The PG known to be down (its circuit breaker open): say so at once, before
			// anything is claimed or recorded.
			if err := s.pay.Ready(); err != nil {
				return Order{}, fmt.Errorf("commerce: pay order %s: %w", r.ID, err)
			}
		}
		if err := s.step(StepPayStart); err != nil {
			return Order{}, err
		}
		claim := step{}
		if r.AmountDue > 0 { // the payment is recorded with the claim, all or nothing
			claim = step{do: s.requestPayment, allOrNothing: true, fault: StepPayClaim}
		}
		err := s.move(ctx, r, now, func(n *orderRow) {
			n.Status, n.Step, n.PayKey, n.PayFingerprint = StatusPaying, stepPay, req.IdempotencyKey, fp
			n.PayMethod, n.PayToken = string(req.Method), req.Token
			if r.AmountDue > 0 {
				n.PaymentID = nextPaymentID(r.ID, r.PaymentID)
			}
		}, claim)
		if errors.Is(err, errLostRace) {
			if r, err = loadOrder(ctx, s.db, r.ID); err != nil { // someone else moved it: decide again
				return Order{}, err
			}
			continue
		}
		if err != nil {
			return Order{}, err
		}
		if err := s.step(StepPayPaying); err != nil {
			return Order{}, err
		}
		switch err := s.settleAttempt(ctx, r); {
		case err == nil:
			return r.order(), nil // r is as the flows left it
		case !errors.Is(err, errLostRace):
			return Order{}, err
		}
		return s.current(ctx, r.ID) // another flow moved it
	}
}

// requestPayment records, in tx, the payment of the order next moving to PAYING, REQUESTED
// (payment.Service.RequestToAttempt): the order's claim and its payment's record commit
// together or not at all, so a PAYING order always has its payment on record and a
// rolled-back claim leaves none. The payment is recorded as taken up by this Pay, the only
// one that won the claim, so that its AttemptRecorded sends it without a write of its own.
func (s *Service) requestPayment(ctx context.Context, tx bun.Tx, next *orderRow) error {
	p, err := s.pay.RequestToAttempt(ctx, tx, next.payRequest())
	next.Recorded = p
	return err
}

// settleAttempt charges the payment Pay has just recorded with the order's claim and
// completes, fails or reopens the order (see settled). The payment is abandoned when the PG
// was certainly not reached (payment.Service.AttemptRecorded: the claim recorded it, r.Recorded).
func (s *Service) settleAttempt(ctx context.Context, r *orderRow) error {
	if r.AmountDue == 0 {
		return s.completePaid(ctx, r)
	}
	p, err := s.pay.AttemptRecorded(ctx, r.Recorded)
	return s.settled(ctx, r, p, err, true)
}

// settlePayment learns the payment's outcome (asking the PG, or, when recovering, the
// payment package's record) and completes or fails the order. (Unlike settleAttempt, which
// has just sent the payment itself, it may find one that was abandoned and then voided; see
// payment.Service.Voided.)
func (s *Service) settlePayment(ctx context.Context, r *orderRow, ask bool) error {
	if r.AmountDue == 0 {
		return s.completePaid(ctx, r)
	}
	p, err := s.charge(ctx, r.payRequest(), ask)
	if voided, verr := s.pay.Voided(ctx, p); verr != nil {
		return fmt.Errorf("commerce: pay order %s: %w", r.ID, verr)
	} else if voided {
		// Abandoned (a crash kept the order from being reopened), then approved by the PG
		// all the same: the payment package gives that charge back, so the order is not
		// paid by it but reopened, as after any abandoned payment.
		p.State, err = payment.StateAbandoned, nil
	}
	return s.settled(ctx, r, p, err, ask)
}

// settled completes, fails or reopens the order r, PAYING, on its payment p as the payment
// package returned it, with err.
func (s *Service) settled(ctx context.Context, r *orderRow, p payment.Payment, err error, ask bool) error {
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
		code := p.DeclineCode
		if code == "" {
			code = "DECLINED"
		}
		return s.closeUnpaid(ctx, r, StatusPaymentFailed, EventPaymentFailed, OutcomeFailed, code)
	case p.State == payment.StateReview:
		return s.failUnderReview(ctx, r)
	case p.State == payment.StateAbandoned:
		if err := s.step(StepPayAbandoned); err != nil {
			return err
		}
		return s.reopen(ctx, r, err, ask)
	case p.State == payment.StatePartiallyRefunded || p.State == payment.StateRefunded:
		// Refunded behind the order's back: it cannot be fulfilled.
		return s.decideRefund(ctx, r, ask)
	case pending(err):
		s.cfg.log.Info("commerce: payment not settled yet", "order", r.ID, "state", p.State, "err", err)
		return nil // PAYING until the reconciler settles it
	}
	return fmt.Errorf("commerce: pay order %s: %w", r.ID, err)
}

// DefaultPGRetryAfter is the Retry-After Pay's answer carries when the PG was not reached
// and its gateway gave no better hint (a circuit breaker's remaining delay), or when the PG
// rejected the refund of an approval that came too late to be fulfilled.
const DefaultPGRetryAfter = 5 * time.Second

// reopen gives an order whose payment was abandoned (the PG was not reached: nothing was
// charged) back to its buyer: PAYING → PENDING_PAYMENT with its holds, its pay key,
// fingerprint, method and token cleared, so that the next Pay, whatever its key, makes a new
// attempt under a new payment ID (the order keeps the abandoned one's, to number the next).
// To a client (ask) it then answers with an error matching errcode.ErrUnavailable, wrapping
// payErr, whose errcode.RetryAfter is the gateway's hint or DefaultPGRetryAfter.
func (s *Service) reopen(ctx context.Context, r *orderRow, payErr error, ask bool) error {
	err := s.move(ctx, r, s.now(), func(n *orderRow) {
		n.Status, n.Step, n.PayKey, n.PayFingerprint, n.PayMethod, n.PayToken = StatusPendingPayment, "", "", "", "", ""
	}, step{})
	if !ask || err != nil && !errors.Is(err, errLostRace) { // lost: another request reopened it
		return err
	}
	return s.pgUnreached("pay order "+r.ID, payErr)
}

// pgUnreached is the answer to a client whose payment of what was given up because the PG
// was not reached: an error matching errcode.ErrUnavailable, wrapping payErr, whose
// errcode.RetryAfter is the gateway's hint, else the delay of the breaker the failure
// opened, else DefaultPGRetryAfter.
func (s *Service) pgUnreached(what string, payErr error) error {
	wait := errcode.RetryAfter(payErr, 0)
	if wait <= 0 {
		wait = errcode.RetryAfter(s.pay.Ready(), DefaultPGRetryAfter)
	}
	return &errcode.UnavailableError{Dependency: "pg", RetryAfter: wait,
		Err: fmt.Errorf("commerce: %s: %w", what, cmp.Or(payErr, payment.ErrAbandoned))}
}

// completePaid turns an order whose payment was approved into PAID: its holds posted (the
// units sold, the coupon confirmed, the points captured), the reward earned and the event
// written, in one transaction (the units first and apart when the inventory is outside
// SQL). When a hold is gone (it expired meanwhile) the order is failed and the payment
// refunded instead.
func (s *Service) completePaid(ctx context.Context, r *orderRow) error {
	err := s.stock.early(ctx, func(ctx context.Context, h stockHolds) error {
		if err := h.Post(ctx, r.ID); err != nil {
			return err
		}
		return s.step(StepPayStockCommitted)
	})
	if err == nil {
		now := s.now()
		reward, withheld := rewardFor(r.AmountDue, s.cfg.rewardBP), int64(0)
		for {
			err = s.move(ctx, r, now, func(n *orderRow) {
				n.Status, n.Step, n.Stock, n.PaidAt, n.Reward = StatusPaid, "", stockCommitted, micros(now), reward
				n.RewardWithheld = withheld
			}, step{do: s.postHolds, allOrNothing: true, event: EventPaymentCompleted, fault: StepPayCommit, outcome: OutcomePaid})
			if reward == 0 || !errors.Is(err, ledger.ErrBalanceLimit) {
				break
			}
			// The user's points are at the ledger's limit: the order is paid all the same,
			// without a reward (the refused transaction rolled back whole), and its event
			// says so.
			s.cfg.log.Warn("commerce: reward not earned: the user's points are at the ledger's limit",
				"order", r.ID, "reward", reward, "err", err)
			reward, withheld = 0, reward
		}
	}
	if errors.Is(err, hold.ErrGone) {
		s.cfg.log.Warn("commerce: approved order cannot be fulfilled", "order", r.ID, "err", err)
		return s.decideRefund(ctx, r, true)
	}
	return err
}

// postHolds posts, in tx, what the paid order next holds (its coupon, its points, its
// units in SQL) and earns its reward.
func (s *Service) postHolds(ctx context.Context, tx bun.Tx, next *orderRow) error {
	if next.CouponID != "" {
		if err := s.coupons(tx).PostCoupon(ctx, next.ID, next.CouponID); err != nil {
			return err
		}
	}
	if next.Points > 0 {
		if err := s.points(tx).Post(ctx, holdID(next.ID)); err != nil {
			return err
		}
	}
	if next.Reward > 0 {
		_, err := s.led.WithTx(tx).Earn(ctx, ledger.EarnRequest{ID: rewardID(next.ID), User: next.UserID, Amount: next.Reward, Reference: next.ID})
		if err != nil {
			return fmt.Errorf("commerce: earn reward of %s: %w", next.ID, err)
		}
	}
	return s.stock.within(ctx, tx, commitOp(next.ID))
}

// rewardFor is amount × basisPoints / 10,000, rounded down, without overflow, and at most
// ledger.MaxAmount, the most one Earn credits.
func rewardFor(amount, basisPoints int64) int64 {
	return min(amount/10_000*basisPoints+amount%10_000*basisPoints/10_000, ledger.MaxAmount)
}

// decideRefund records that an approved order cannot be fulfilled, then refunds it.
func (s *Service) decideRefund(ctx context.Context, r *orderRow, ask bool) error {
	err := s.move(ctx, r, s.now(), func(n *orderRow) { n.Step, n.FailureCode = stepRefund, FailureUnfulfillable }, step{})
	if err != nil {
		return err
	}
	if err := s.step(StepPayRefundDecided); err != nil {
		return err
	}
	return s.refundLateApproval(ctx, r, ask)
}

// refundLateApproval refunds the whole payment of an order that cannot be fulfilled, then
// fails the order, giving back what it held. A refund the PG rejects is not given up: the
// order, still charged, counts it (its cancel_attempt) and stays on step "refund", so that
// the next try (the client's Pay replay, Recover's next pass) makes a new refund
// (lateRefundID), until the PG accepts one; the rejection is answered as the PG unavailable
// (errcode.ErrUnavailable, wrapping payment.ErrRefundRejected, with DefaultPGRetryAfter).
func (s *Service) refundLateApproval(ctx context.Context, r *orderRow, ask bool) error {
	code := r.FailureCode
	if r.AmountDue > 0 {
		settled, err := s.refund(ctx, r, lateRefundID(r.ID, r.CancelAttempt), "order cannot be fulfilled", ask)
		switch {
		case errors.Is(err, payment.ErrUnderReview):
			// The PG contradicted the payment since: a person settles the money; the order
			// fails and gives back what it held, as any order on a payment under review.
			code = FailurePaymentReview
		case errors.Is(err, payment.ErrRefundRejected):
			next := r.CancelAttempt + 1
			merr := s.move(ctx, r, s.now(), func(n *orderRow) { n.CancelAttempt = next }, step{})
			if merr != nil && !errors.Is(merr, errLostRace) { // lost: another try counted it
				return merr
			}
			// The PG holds the money until it accepts a refund: the client retries later.
			return &errcode.UnavailableError{Dependency: "pg", RetryAfter: DefaultPGRetryAfter, Err: err}
		case err != nil || !settled:
			return err
		default:
			if err := s.step(StepPayRefunded); err != nil {
				return err
			}
		}
	}
	return s.closeUnpaid(ctx, r, StatusPaymentFailed, EventPaymentFailed, OutcomeFailed, code)
}
