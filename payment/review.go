package payment

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// The refunds ResolveReview records, and their reasons.
const (
	giveBackReason = "review resolved: nothing is fulfilled on this payment"
	pgRefundReason = "refunded at the gateway outside the service (found when the review was resolved)"
)

// maxGiveBacks bounds the give-backs ResolveReview makes of one payment: after the PG refused
// that many, it takes the PG's record no more (ErrRefundRejected; a person decides).
const maxGiveBacks = 5

// giveBackID names the n-th refund (from 1) ResolveReview makes of what the PG still holds of
// a payment: "review-<payment>", then "review2-<payment>", ... after the PG refused one.
func giveBackID(paymentID string, n int) string { return refundIDOf(attempt("review", n), paymentID) }

// pgRefundID names the refunds the PG made of a payment outside the Service (in its console),
// as ResolveReview records them when it takes the PG's record for its n-th give-back.
func pgRefundID(paymentID string, n int) string { return refundIDOf(attempt("console", n), paymentID) }

// attempt is the prefix of the n-th refund of a kind: "name-", then "name2-", "name3-"...
// (never "name-2-": that is the first of a payment whose ID begins "2-").
func attempt(name string, n int) string {
	if n <= 1 {
		return name + "-"
	}
	return name + strconv.Itoa(n) + "-"
}

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
//     Reconciler; nothing is charged or refunded twice. One the PG refuses (its record
//     changed since it was read: refunded in part in its console, say) makes it take the
//     PG's record again at once, the same way, and give back what the PG still holds under
//     a refund of its own ("review2-<payment>", ...; once per call, maxGiveBacks in all);
//     a refusal of that too is ErrRefundRejected, and a record it cannot take any more (the
//     PG reversed the payment meanwhile) ErrUnresolvable.
//
// A refund of the payment still pending (its answer lost before the payment went to REVIEW,
// say) is settled first by the PG's record, as the Reconciler settles it, and counted so:
// SUCCEEDED if the PG made it, FAILED if it did not and cannot (it has the payment declined),
// sent again only if the PG's record of the approved payment shows it was not made; see
// Refund. Nothing is refunded twice.
//
// The payment stays in REVIEW, and the error says why, while the PG cannot be asked
// (ErrGatewayUnavailable, ErrOutcomeUnknown), is still processing the payment
// (ErrOutcomeUnknown), a refund of it is still pending that the PG's record does not settle
// (the error of that refund, as Refund's: ErrOutcomeUnknown for a PG that contradicts it;
// or ErrRefundInProgress), or its record cannot be taken as it is (ErrUnresolvable: another
// amount or currency, less refunded than the record says, refunds of a payment it declined,
// or a state the payment would enter a second time): a person settles that with the PG
// first.
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
		var err error
		if p, err = s.settlePending(ctx, p); err != nil || p.State != StateReview {
			return p, err
		}
	}
	st, none, err := s.pgRecord(ctx, p)
	if err != nil {
		return p, err
	}
	to, refunded := StateDeclined, int64(0)
	switch {
	case (none || st.State == GatewayDeclined && st.Canceled == 0) && p.Refunded == 0:
		// Nothing charged, nothing refunded. A declined payment the PG has refunds of
		// (one made before it reversed its approval, say) is for a person: below.
	case none || !takeable(p, st):
		return p, fmt.Errorf("%w: %q: recorded %d %s with %d refunded, the gateway has %s %d %s with %d refunded",
			ErrUnresolvable, p.ID, p.Amount, p.Currency, p.Refunded, cmp.Or(string(st.State), "no payment"), st.Amount, st.Currency, st.Canceled)
	default:
		refunded = st.Canceled
		to = chargeState(p.Amount, refunded)
	}
	// What the PG still holds: given back now.
	back := int64(0)
	if to != StateDeclined {
		back = p.Amount - refunded
	}
	detail := fmt.Sprintf("the gateway has it %s, %d refunded: %d given back", cmp.Or(string(st.State), "nowhere"), st.Canceled, back)
	return s.take(ctx, p, to, refunded, back, 1, detail)
}

// settlePending settles the refund pending on p, in REVIEW, by the PG's record, as the
// Reconciler does (see Service.completeRefund: it asks the PG first, and sends the refund
// again only if the PG's record shows it was not made), and returns p read again. A refund
// the PG's record does not settle is its error (ErrGatewayUnavailable, ErrOutcomeUnknown: the
// PG cannot be asked, or contradicts the record), or ErrRefundInProgress; a refund the PG
// refused (FAILED) is settled.
func (s *Service) settlePending(ctx context.Context, p Payment) (Payment, error) {
	rs, err := s.Refunds(ctx, p.ID)
	if err != nil {
		return p, err
	}
	for _, r := range rs {
		if r.State != RefundPending {
			continue
		}
		if _, err := s.completeRefund(ctx, r, true); err != nil && !errors.Is(err, ErrRefundRejected) {
			return p, err
		}
	}
	now, err := s.Get(ctx, p.ID)
	switch {
	case err != nil:
		return p, err
	case now.State == StateReview && now.RefundPending > 0:
		return now, fmt.Errorf("%w: %q", ErrRefundInProgress, p.ID)
	}
	return now, nil
}

// take records the PG's record of p, as the n-th give-back of ResolveReview finds it: p moved
// from its state (as read, with nothing pending) to to, with refunded in all, the refunds
// made at the PG since (refunded less p.Refunded) recorded as one SUCCEEDED refund, and back
// recorded as the PENDING give-back, in one transaction. It returns p as it is then: as
// another resolver left it, if one came first. A refund or state it would record a second
// time is ErrUnresolvable.
func (s *Service) take(ctx context.Context, p Payment, to State, refunded, back int64, n int, detail string) (Payment, error) {
	outside, at := refunded-p.Refunded, s.now()
	detail = truncate(detail, 255)
	moved := to != p.State
	err := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*paymentRow)(nil)).
			Set("state = ?", string(to)).Set("updated_at = ?", at).
			Set("refunded = ?", refunded).Set("refund_pending = ?", back).
			Where("id = ?", p.ID).Where("state = ?", string(p.State)).
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
			refunds = append(refunds, &refundRow{ID: pgRefundID(p.ID, n), PaymentID: p.ID, Amount: outside, Reason: pgRefundReason,
				State: string(RefundSucceeded), CreatedAt: at, UpdatedAt: at})
		}
		if back > 0 {
			refunds = append(refunds, &refundRow{ID: giveBackID(p.ID, n), PaymentID: p.ID, Amount: back, Reason: giveBackReason,
				State: string(RefundPending), CreatedAt: at, UpdatedAt: at})
		}
		for _, r := range refunds {
			if _, err := tx.NewInsert().Model(r).Exec(ctx); err != nil {
				return err
			}
		}
		if !moved {
			return nil
		}
		return insertTransition(ctx, tx, Transition{PaymentID: p.ID, From: p.State, To: to, Cause: CauseResolved, Detail: detail, At: at})
	})
	if err != nil && s.committed(ctx, err, func(db bun.IDB) *bun.SelectQuery {
		if moved {
			return transitionQuery(db, Transition{PaymentID: p.ID, From: p.State, To: to, Cause: CauseResolved, At: at})
		}
		return db.NewSelect().Model((*paymentRow)(nil)).Where("id = ?", p.ID).Where("state = ?", string(to)).
			Where("refunded = ?", refunded).Where("refund_pending = ?", back).Where("updated_at = ?", at)
	}) {
		err = nil
	}
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
		"from", p.State, "to", to, "give_back", n, "detail", detail)
	if moved {
		s.transitioned(Transition{PaymentID: p.ID, From: p.State, To: to, Cause: CauseResolved, Detail: detail, At: at})
	}
	p.State, p.Refunded, p.RefundPending, p.UpdatedAt = to, refunded, back, at
	return p, nil
}

// giveBack completes the latest give-back a resolved review recorded for p, if it is still
// pending, and returns p as it is then; a payment never resolved from REVIEW is
// ErrNotUnderReview. When the PG refused it (its record changed since it was read: refunded
// in part in its console, say), the PG's record is taken again (see retake), once per call.
func (s *Service) giveBack(ctx context.Context, p Payment) (Payment, error) {
	for retook := false; ; retook = true {
		r, n, err := s.lastGiveBack(ctx, p.ID)
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
		p, err = s.sendRecorded(ctx, p, r)
		// Retaken only on the PG's refusal, with p read back after it (not on a failure to
		// read it: p as it was then still has the refused give-back pending).
		if !errors.Is(err, ErrRefundRejected) || retook || n >= maxGiveBacks {
			return p, err
		}
		if p, err = s.retake(ctx, p, n+1); err != nil {
			return p, err
		}
	}
}

// lastGiveBack returns the latest give-back ResolveReview recorded for the payment and its
// number, or ErrRefundNotFound.
func (s *Service) lastGiveBack(ctx context.Context, paymentID string) (Refund, int, error) {
	rs, err := s.Refunds(ctx, paymentID)
	if err != nil {
		return Refund{}, 0, err
	}
	byID := make(map[string]Refund, len(rs))
	for _, r := range rs {
		byID[r.ID] = r
	}
	last, n := Refund{}, 0
	for i := 1; i <= maxGiveBacks; i++ {
		r, ok := byID[giveBackID(paymentID, i)]
		if !ok {
			break
		}
		last, n = r, i
	}
	if n == 0 {
		return Refund{}, 0, fmt.Errorf("%w: %q", ErrRefundNotFound, giveBackID(paymentID, 1))
	}
	return last, n, nil
}

// retake takes the PG's record of p again after the PG refused its give-back, as the n-th
// give-back: the refunds the PG made since recorded, and the rest of what it holds given
// back (see take). A payment refunded meanwhile (by Refund) is left as it is; a refund of it
// still pending is ErrRefundInProgress; a PG that holds it otherwise than approved, for the
// recorded amount and currency, with at least the recorded refunds (it reversed the payment
// meanwhile, say), is ErrUnresolvable: the record cannot return to a state it left.
func (s *Service) retake(ctx context.Context, p Payment, n int) (Payment, error) {
	switch {
	case p.RefundPending > 0:
		return p, fmt.Errorf("%w: %q", ErrRefundInProgress, p.ID)
	case p.State == StateRefunded:
		return p, nil
	case p.State != StateApproved && p.State != StatePartiallyRefunded:
		return p, fmt.Errorf("%w: %q is %s after its give-back was refused", ErrUnresolvable, p.ID, p.State)
	}
	st, none, err := s.pgRecord(ctx, p)
	if err != nil {
		return p, err
	}
	if none || !takeable(p, st) {
		return p, s.unresolvable(ctx, p, fmt.Sprintf("recorded %s %d %s with %d refunded, its give-back refused; the gateway has %s %d %s with %d refunded",
			p.State, p.Amount, p.Currency, p.Refunded, cmp.Or(string(st.State), "no payment"), st.Amount, st.Currency, st.Canceled))
	}
	to, back := chargeState(p.Amount, st.Canceled), p.Amount-st.Canceled
	detail := fmt.Sprintf("give-back %d refused; the gateway has it %s, %d refunded: %d given back", n-1, st.State, st.Canceled, back)
	return s.take(ctx, p, to, st.Canceled, back, n, detail)
}

// resolved reports whether the payment left REVIEW through ResolveReview.
func (s *Service) resolved(ctx context.Context, paymentID string) (bool, error) {
	n, err := s.db.NewSelect().Model((*transitionRow)(nil)).
		Where("payment_id = ?", paymentID).Where("from_state = ?", string(StateReview)).
		Where("cause = ?", string(CauseResolved)).Count(ctx)
	if err != nil {
		return false, fmt.Errorf("payment: reading transitions of %q: %w", paymentID, sqlutil.Unavailable(s.db, err))
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
	st, none, err := s.pgRecord(ctx, p)
	if err != nil || none || st.State == GatewayDeclined {
		return err
	}
	return s.unresolvable(ctx, p, fmt.Sprintf("resolved DECLINED, the gateway now has it %s, %d %s with %d refunded",
		st.State, st.Amount, st.Currency, st.Canceled))
}

// pgRecord asks the PG for its record of p: none when it has no such payment. A PG that
// cannot be asked is its error (ErrGatewayUnavailable); one whose answer is lost, or that is
// still processing p, is ErrOutcomeUnknown.
func (s *Service) pgRecord(ctx context.Context, p Payment) (st GatewayPayment, none bool, err error) {
	st, err = s.gw.Status(ctx, p.ID)
	switch {
	case errors.Is(err, ErrNotAtGateway):
		return GatewayPayment{}, true, nil
	case err != nil && classify(err) == outcomeNone:
		return st, false, err
	case err != nil:
		return st, false, fmt.Errorf("%w: asking the gateway about %q: %w", ErrOutcomeUnknown, p.ID, err)
	case st.State == GatewayPending:
		return st, false, fmt.Errorf("%w: the gateway is still processing %q", ErrOutcomeUnknown, p.ID)
	}
	return st, false, nil
}

// chargeState is the state of a charge of amount with refunded of it refunded.
func chargeState(amount, refunded int64) State {
	switch {
	case refunded == amount:
		return StateRefunded
	case refunded > 0:
		return StatePartiallyRefunded
	}
	return StateApproved
}

// takeable reports whether st, the PG's record of p, can be taken as a charge: approved for
// the recorded amount and currency, with at least the recorded refunds and at most all of it.
func takeable(p Payment, st GatewayPayment) bool {
	return st.State == GatewayApproved && st.Amount == p.Amount && st.Currency == p.Currency &&
		st.Canceled >= p.Refunded && st.Canceled <= p.Amount
}

// unresolvable logs, as an ERROR, that the PG contradicts p's resolved review (detail says
// how) and returns the ErrUnresolvable to answer: a person settles it with the PG.
func (s *Service) unresolvable(ctx context.Context, p Payment, detail string) error {
	s.logger.ErrorContext(ctx, "payment: the gateway contradicts a resolved review; a person must settle it with the gateway",
		"payment", p.ID, "order", p.OrderID, "detail", detail)
	return fmt.Errorf("%w: %q: %s", ErrUnresolvable, p.ID, detail)
}
