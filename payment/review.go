package payment

import (
	"cmp"
	"context"
	"errors"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// The refunds ResolveReview records, and their reasons.
const (
	giveBackReason = "review resolved: nothing is fulfilled on this payment"
	pgRefundReason = "refunded at the gateway outside the service (found when the review was resolved)"
)

// giveBackID names the refund ResolveReview makes of what the PG still holds of a payment.
func giveBackID(paymentID string) string { return refundIDOf("review-", paymentID) }

// pgRefundID names the refunds the PG made of a payment outside the Service (in its console),
// as ResolveReview records them.
func pgRefundID(paymentID string) string { return refundIDOf("console-", paymentID) }

// errMoved: a conditional update found the row no longer as it was read.
var errMoved = errors.New("moved meanwhile")

// ResolveReview closes a payment in REVIEW by giving back whatever the PG holds of it: the
// decision for a payment its owner fulfilled nothing on (commerce fails the order or top-up
// of a payment that goes to REVIEW). It trusts no one's word but the PG's own record, asked
// again now (Gateway.Status), and moves the payment, with cause CauseResolved, to:
//   - DECLINED when the PG has no such payment or has it declined: nothing was charged;
//   - REFUNDED when the PG approved it, for the recorded amount and currency, and has
//     refunded all of it (a person did, in the PG's console, say): the refunds made there
//     are recorded as one SUCCEEDED refund;
//   - APPROVED (or PARTIALLY_REFUNDED, recording the refunds made at the PG as above) when the
//     PG holds some of it, with the refund of the rest recorded as PENDING in the same
//     transaction and then sent like any refund: REFUNDED once the PG confirms it. A refund the
//     PG does not confirm now stays PENDING, and ResolveReview returns its error
//     (ErrGatewayUnavailable or ErrOutcomeUnknown): call it again, or leave it to the
//     Reconciler; nothing is charged or refunded twice. One the PG refuses is
//     ErrRefundRejected, the payment then refundable by Refund with a new refund ID.
//
// The payment stays in REVIEW, and the error says why, while the PG cannot be asked
// (ErrGatewayUnavailable, ErrOutcomeUnknown), is still processing the payment
// (ErrOutcomeUnknown), a refund of it is still pending (ErrRefundInProgress), or its record
// cannot be taken as it is (ErrUnresolvable: another amount or currency, less refunded than
// the record says, or a state the payment would enter a second time): a person settles that
// with the PG first.
//
// It is idempotent: called again, or concurrently, on a payment it resolved, it completes the
// pending refund if there is one and returns the payment as it is. One it resolved to
// DECLINED is checked with the PG again: if the PG holds the charge after all (it reversed
// its answer again), it is ErrUnresolvable, since a payment enters REVIEW once (a webhook or
// a settlement the PG contradicts then is ErrUnresolvable too, told to the Observer). A
// payment that was never in REVIEW is ErrNotUnderReview and changes nothing.
func (s *Service) ResolveReview(ctx context.Context, paymentID string) (Payment, error) {
	if err := validID("PaymentID", paymentID); err != nil {
		return Payment{}, err
	}
	p, err := s.Get(ctx, paymentID)
	if err != nil {
		return Payment{}, err
	}
	if p.State == StateReview {
		if p, err = s.resolve(ctx, p); err != nil {
			return p, err
		}
	}
	return s.giveBack(ctx, p)
}

// resolve moves p, in REVIEW, to what the PG's record says (see ResolveReview) and returns it
// as it is then: as another resolver left it, if one came first.
func (s *Service) resolve(ctx context.Context, p Payment) (Payment, error) {
	if p.RefundPending > 0 {
		return p, fmt.Errorf("%w: %q", ErrRefundInProgress, p.ID)
	}
	st, err := s.gw.Status(ctx, p.ID)
	none := errors.Is(err, ErrNotAtGateway)
	if err != nil && !none {
		if classify(err) == outcomeNone {
			return p, err
		}
		return p, fmt.Errorf("%w: asking the gateway about %q: %w", ErrOutcomeUnknown, p.ID, err)
	}
	to, refunded := StateDeclined, int64(0)
	switch {
	case (none || st.State == GatewayDeclined) && p.Refunded == 0:
	case st.State == GatewayPending:
		return p, fmt.Errorf("%w: the gateway is still processing %q", ErrOutcomeUnknown, p.ID)
	case none || st.State != GatewayApproved || st.Amount != p.Amount || st.Currency != p.Currency ||
		st.Canceled < p.Refunded || st.Canceled > p.Amount:
		return p, fmt.Errorf("%w: %q: recorded %d %s with %d refunded, the gateway has %s %d %s with %d refunded",
			ErrUnresolvable, p.ID, p.Amount, p.Currency, p.Refunded, cmp.Or(string(st.State), "no payment"), st.Amount, st.Currency, st.Canceled)
	default:
		refunded = st.Canceled
		switch to = StateApproved; {
		case refunded == p.Amount:
			to = StateRefunded
		case refunded > 0:
			to = StatePartiallyRefunded
		}
	}
	// What the PG refunded outside the Service, and what it still holds: given back now.
	outside, back := refunded-p.Refunded, int64(0)
	if to != StateDeclined {
		back = p.Amount - refunded
	}
	at := s.now()
	detail := truncate(fmt.Sprintf("the gateway has it %s, %d refunded: %d given back", cmp.Or(string(st.State), "nowhere"),
		st.Canceled, back), 255)
	err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*paymentRow)(nil)).
			Set("state = ?", string(to)).Set("updated_at = ?", at).
			Set("refunded = ?", refunded).Set("refund_pending = ?", back).
			Where("id = ?", p.ID).Where("state = ?", string(StateReview)).
			Where("refunded = ?", p.Refunded).Where("refund_pending = 0").
			Exec(ctx)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return cmp.Or(err, errMoved)
		}
		var refunds []*refundRow
		if outside > 0 {
			refunds = append(refunds, &refundRow{ID: pgRefundID(p.ID), PaymentID: p.ID, Amount: outside, Reason: pgRefundReason,
				State: string(RefundSucceeded), CreatedAt: at, UpdatedAt: at})
		}
		if back > 0 {
			refunds = append(refunds, &refundRow{ID: giveBackID(p.ID), PaymentID: p.ID, Amount: back, Reason: giveBackReason,
				State: string(RefundPending), CreatedAt: at, UpdatedAt: at})
		}
		for _, r := range refunds {
			if _, err := tx.NewInsert().Model(r).Exec(ctx); err != nil {
				return err
			}
		}
		return insertTransition(ctx, tx, Transition{PaymentID: p.ID, From: StateReview, To: to, Cause: CauseResolved, Detail: detail, At: at})
	})
	switch {
	case errors.Is(err, errMoved):
		return s.Get(ctx, p.ID)
	case sqlutil.IsDuplicateKey(err):
		return p, fmt.Errorf("%w: %q: taking the gateway's record would repeat a step the record made before (%s, or a refund of this review)",
			ErrUnresolvable, p.ID, to)
	case err != nil:
		return p, fmt.Errorf("payment: resolving the review of %q: %w", p.ID, err)
	}
	s.logger.WarnContext(ctx, "payment: review resolved from the gateway's record", "payment", p.ID, "order", p.OrderID,
		"to", to, "detail", detail)
	s.transitioned(Transition{PaymentID: p.ID, From: StateReview, To: to, Cause: CauseResolved, Detail: detail, At: at})
	p.State, p.Refunded, p.RefundPending, p.UpdatedAt = to, refunded, back, at
	return p, nil
}

// giveBack completes the refund a resolved review recorded for p, if it is still pending, and
// returns p as it is then; a payment never resolved from REVIEW is ErrNotUnderReview.
func (s *Service) giveBack(ctx context.Context, p Payment) (Payment, error) {
	r, err := s.GetRefund(ctx, giveBackID(p.ID))
	if errors.Is(err, ErrRefundNotFound) {
		resolved, err := s.resolved(ctx, p.ID)
		switch {
		case err == nil && !resolved:
			err = fmt.Errorf("%w: %q is %s", ErrNotUnderReview, p.ID, p.State)
		case err == nil && p.State == StateDeclined:
			err = s.stillNothing(ctx, p)
		}
		return p, err
	}
	if err != nil {
		return p, err
	}
	if r.State == RefundPending {
		r, err = s.completeRefund(ctx, r, false)
	} else {
		err = r.result(nil)
	}
	if now, gerr := s.Get(ctx, p.ID); gerr == nil {
		p = now
	}
	return p, err
}

// resolved reports whether the payment left REVIEW through ResolveReview.
func (s *Service) resolved(ctx context.Context, paymentID string) (bool, error) {
	n, err := s.db.NewSelect().Model((*transitionRow)(nil)).
		Where("payment_id = ?", paymentID).Where("from_state = ?", string(StateReview)).
		Where("cause = ?", string(CauseResolved)).Count(ctx)
	if err != nil {
		return false, fmt.Errorf("payment: reading transitions of %q: %w", paymentID, err)
	}
	return n > 0, nil
}

// stillNothing asks the PG again about p, whose review was resolved to DECLINED (the PG held
// nothing), and returns nil while the PG still has it declined or has no such payment: else
// ErrUnresolvable (the PG reversed its answer again, and p cannot enter REVIEW twice: a
// person settles it with the PG), or the error of a PG that cannot be asked or is processing
// it (ErrGatewayUnavailable, ErrOutcomeUnknown). A payment whose record says nothing was
// charged is never reported settled while the PG holds its money.
func (s *Service) stillNothing(ctx context.Context, p Payment) error {
	st, err := s.gw.Status(ctx, p.ID)
	switch {
	case errors.Is(err, ErrNotAtGateway):
		return nil
	case err != nil && classify(err) == outcomeNone:
		return err
	case err != nil:
		return fmt.Errorf("%w: asking the gateway about %q: %w", ErrOutcomeUnknown, p.ID, err)
	case st.State == GatewayDeclined:
		return nil
	case st.State == GatewayPending:
		return fmt.Errorf("%w: the gateway is processing %q again", ErrOutcomeUnknown, p.ID)
	}
	detail := fmt.Sprintf("resolved DECLINED, the gateway now has it %s, %d %s with %d refunded", st.State, st.Amount, st.Currency, st.Canceled)
	s.logger.ErrorContext(ctx, "payment: the gateway contradicts a resolved review; a person must settle it with the gateway",
		"payment", p.ID, "order", p.OrderID, "detail", detail)
	return fmt.Errorf("%w: %q: %s", ErrUnresolvable, p.ID, detail)
}
