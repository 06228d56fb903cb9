package payment

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// RefundState is where a refund is.
type RefundState string

// The states of a refund.
const (
	// RefundPending: recorded, its amount reserved on the payment, not yet confirmed by the PG.
	RefundPending RefundState = "PENDING"
	// RefundSucceeded: the PG refunded it.
	RefundSucceeded RefundState = "SUCCEEDED"
	// RefundFailed: the PG refused it; its amount is refundable again.
	RefundFailed RefundState = "FAILED"
)

// Refund is a full or partial refund of a payment.
type Refund struct {
	ID             string
	PaymentID      string
	Amount         int64
	Reason         string
	State          RefundState
	PGReference    string
	FailureCode    string
	FailureMessage string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// RefundRequest asks for a refund. RefundID is its idempotency key, and the PG's. It is the
// caller's choice, except for the names the Service gives the refunds it makes itself
// ("void-", "review-", "review2-", ..., "console-", "console2-", ... followed by anything),
// which Validate refuses: a caller's refund under such a name would take the place of the
// Service's own (see reservedRefundID).
type RefundRequest struct {
	RefundID  string
	PaymentID string
	// Amount is in the payment's currency; the payment's Refundable() for a full refund.
	Amount int64
	// Reason is passed to the PG (at most 255 characters).
	Reason string
}

// Validate checks the request without touching anything.
func (r RefundRequest) Validate() error {
	if err := validID("RefundID", r.RefundID); err != nil {
		return err
	}
	if reservedRefundID(r.RefundID) {
		return invalid("RefundID", "must not begin with void-, review-, console- (or review2-, console2-, ...): the Service names its own refunds so")
	}
	if err := validID("PaymentID", r.PaymentID); err != nil {
		return err
	}
	if r.Amount <= 0 {
		return invalid("Amount", "must be positive")
	}
	if !utf8.ValidString(r.Reason) || utf8.RuneCountInString(r.Reason) > 255 || strings.ContainsRune(r.Reason, 0) {
		// bun's MySQL dialect drops a NUL: the retry of the refund would be taken for
		// another under its ID.
		return invalid("Reason", "must be valid UTF-8 of at most 255 characters, without a NUL")
	}
	return nil
}

type refundRow struct {
	bun.BaseModel `bun:"table:payment_refunds"`

	ID             string    `bun:"id,pk"`
	PaymentID      string    `bun:"payment_id"`
	Amount         int64     `bun:"amount"`
	Reason         string    `bun:"reason"`
	State          string    `bun:"state"`
	PGReference    string    `bun:"pg_reference"`
	FailureCode    string    `bun:"failure_code"`
	FailureMessage string    `bun:"failure_message"`
	CreatedAt      time.Time `bun:"created_at"`
	UpdatedAt      time.Time `bun:"updated_at"`
}

func (r *refundRow) refund() Refund {
	return Refund{
		ID: r.ID, PaymentID: r.PaymentID, Amount: r.Amount, Reason: r.Reason, State: RefundState(r.State),
		PGReference: r.PGReference, FailureCode: r.FailureCode, FailureMessage: r.FailureMessage,
		CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(),
	}
}

// Refund refunds all or part of an APPROVED or PARTIALLY_REFUNDED payment through the PG.
//
// Like Pay it records first: the refund is stored as PENDING and its amount reserved on the
// payment in a committed transaction of its own, then the PG is asked with the refund ID as
// its idempotency key, then the answer is recorded. The reservation is a conditional update of
// the payment row (refunded + amount <= paid, and no other refund pending), so the total
// refunded never exceeds the amount paid however many refunds race, and the refunds of one
// payment are serialised: while one is with the PG, another gets ErrRefundInProgress.
//
// The error says why the refund is not SUCCEEDED: ErrRefundRejected (FAILED, wrapping the PG's
// *DeclineError), or ErrGatewayUnavailable / ErrOutcomeUnknown (still PENDING: call Refund
// again with the same request, or leave it to the Reconciler, which completes it; past the
// key window, see WithGatewayKeyWindow, it is sent again only if the PG has not made it).
// Refund is idempotent on RefundID; the same ID with another payment, amount or reason is
// ErrRefundIDReused. Completing a PENDING refund the Service cannot send again safely (the
// Reconciler, or a retry past the key window) goes by the PG's record of its refunds by
// refund ID: a refund made outside the Service, in the PG's console, is never taken for a
// pending one, even of the same amount (see Gateway.Status).
// A refund beyond what is refundable is a *RefundAmountError, of a payment in another state
// ErrNotRefundable; both change nothing.
func (s *Service) Refund(ctx context.Context, req RefundRequest) (Refund, error) {
	if err := req.Validate(); err != nil {
		return Refund{}, err
	}
	r, err := s.reserveRefund(ctx, req)
	if err != nil {
		return Refund{}, err
	}
	if r.PaymentID != req.PaymentID || r.Amount != req.Amount || r.Reason != req.Reason {
		return Refund{}, fmt.Errorf("%w: %q", ErrRefundIDReused, req.RefundID)
	}
	if r.State != RefundPending {
		return r, r.result(nil)
	}
	return s.completeRefund(ctx, r, false)
}

// maxReserveAttempts bounds how often reserveRefund tries again when another refund of the
// payment settled between its reservation and its diagnosis.
const maxReserveAttempts = 10

// errNoReservation: the conditional reservation matched no row.
var errNoReservation = errors.New("no reservation")

// reserveRefund returns the refund with req's ID, recording it as PENDING and reserving its
// amount on the payment if it does not exist yet.
func (s *Service) reserveRefund(ctx context.Context, req RefundRequest) (Refund, error) {
	for range maxReserveAttempts {
		if r, err := s.GetRefund(ctx, req.RefundID); !errors.Is(err, ErrRefundNotFound) {
			return r, err
		}
		now := s.now()
		row := &refundRow{
			ID: req.RefundID, PaymentID: req.PaymentID, Amount: req.Amount, Reason: req.Reason,
			State: string(RefundPending), CreatedAt: now, UpdatedAt: now,
		}
		err := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
			res, err := tx.NewUpdate().Model((*paymentRow)(nil)).
				Set("refund_pending = refund_pending + ?", req.Amount).
				Set("updated_at = ?", now).
				Where("id = ?", req.PaymentID).
				Where("state IN (?)", bun.List([]string{string(StateApproved), string(StatePartiallyRefunded)})).
				Where("refund_pending = 0").
				Where("amount - refunded >= ?", req.Amount).
				Exec(ctx)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				return cmp.Or(err, errNoReservation)
			}
			_, err = tx.NewInsert().Model(row).Exec(ctx)
			return err
		})
		switch {
		case err == nil:
			return row.refund(), nil
		case sqlutil.IsDuplicateKey(err):
			continue // the same refund ID raced us: read it
		case errors.Is(err, errNoReservation):
			if err := s.refusal(ctx, req); err != nil {
				return Refund{}, err
			}
			// The obstacle is gone (a pending refund settled since): try again.
		default:
			return Refund{}, fmt.Errorf("payment: recording refund %q: %w", req.RefundID, err)
		}
	}
	return Refund{}, fmt.Errorf("%w: %q", ErrRefundInProgress, req.PaymentID)
}

// refusal explains why the reservation for req matched nothing, or returns nil when nothing
// stands in its way any more.
func (s *Service) refusal(ctx context.Context, req RefundRequest) error {
	if _, err := s.GetRefund(ctx, req.RefundID); err == nil {
		return nil // the same refund ID was recorded meanwhile: the caller reads it
	} else if !errors.Is(err, ErrRefundNotFound) {
		return err // not knowing that, no refusal
	}
	p, err := s.Get(ctx, req.PaymentID)
	switch {
	case err != nil:
		return err
	case p.State != StateApproved && p.State != StatePartiallyRefunded:
		return fmt.Errorf("%w: %q is %s", ErrNotRefundable, p.ID, p.State)
	case req.Amount > p.Amount-p.Refunded:
		return &RefundAmountError{PaymentID: p.ID, Requested: req.Amount, Refundable: p.Amount - p.Refunded - p.RefundPending}
	case p.RefundPending > 0:
		return fmt.Errorf("%w: %q", ErrRefundInProgress, p.ID)
	}
	return nil
}

// cancel asks the PG to refund r, which is PENDING, and records the answer.
func (s *Service) cancel(ctx context.Context, r Refund) (Refund, error) {
	c, callErr := s.gw.Cancel(ctx, CancelRequest{CancelID: r.ID, PaymentID: r.PaymentID, Amount: r.Amount, Reason: r.Reason})
	wctx, done := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer done()
	var err error
	switch classify(callErr) {
	case outcomeYes:
		r, err = s.settleRefund(wctx, r, RefundSucceeded, c.Reference, nil)
	case outcomeNo:
		r, err = s.settleRefund(wctx, r, RefundFailed, "", declineOf(callErr))
	default:
		s.logger.WarnContext(ctx, "payment: refund not confirmed by the gateway", "refund", r.ID, "payment", r.PaymentID, "err", callErr)
	}
	if err != nil {
		return r, err
	}
	return r, r.result(callErr)
}

// completeRefund asks the PG to refund r, which was PENDING when read, and records the
// answer. Within the key window (and unless lookUp), it sends the refund again with its ID as
// the idempotency key. Beyond it the PG may have pruned the key and would refund again, so
// it first asks the PG (Gateway.Status) how much of the payment it has refunded: refunds of
// a payment are serialised, so the PG's total is the record's succeeded refunds, plus r if
// the PG made it. The record's total alone: the PG never made r, which is sent again. The
// record's total plus r's amount: r succeeded, recorded without sending it again, if the PG
// lists a refund of that amount under r's ID (GatewayPayment.Cancels) — else the difference
// is a refund made outside the Service (an operator's, in the PG's console, of the very
// same amount), not r, which the PG never made: taking it for r would record a refund
// nobody made and swallow the operator's, so it is a contradiction like any other below,
// and so is that total from a PG that does not list its refunds. The total counts only when the PG
// has the payment approved, for the recorded amount and currency: while it is still
// processing it r is left PENDING (ErrOutcomeUnknown), and any other answer, like any other
// total, contradicts the record, which is reported (see Observer) and leaves r PENDING for
// a person. Nothing is sent again unless the PG's answer shows r was not made. Of a payment
// in REVIEW that the PG has declined (it reversed its approval), r is recorded as the PG
// has it without sending it: SUCCEEDED if the PG lists it made, FAILED (code
// PAYMENT_DECLINED_AT_GATEWAY) if the PG refunded nothing beyond the record (see
// reversedRefund); so ResolveReview, and the Reconciler, can settle it.
func (s *Service) completeRefund(ctx context.Context, r Refund, lookUp bool) (Refund, error) {
	if !lookUp && !s.keyMayBeGone(r.CreatedAt) {
		return s.cancel(ctx, r)
	}
	// The payment first, then the refund: a refund still PENDING after the payment was read
	// is not in the payment's refunded total.
	p, err := s.Get(ctx, r.PaymentID)
	if err != nil {
		return r, err
	}
	if r, err = s.GetRefund(ctx, r.ID); err != nil || r.State != RefundPending {
		return r, cmp.Or(err, r.result(nil))
	}
	st, err := s.gw.Status(ctx, r.PaymentID)
	if err != nil {
		s.logger.WarnContext(ctx, "payment: could not ask the gateway about a refund", "refund", r.ID, "payment", r.PaymentID, "err", err)
		return r, r.result(err)
	}
	// Only the PG's record of the payment approved as recorded has a refunded total to go by,
	// save for a payment in REVIEW the PG has declined (see reversedRefund).
	var detail string
	switch {
	case st.State == GatewayPending:
		return r, fmt.Errorf("%w: the gateway is still processing %q", ErrOutcomeUnknown, p.ID)
	case p.State == StateReview && st.State == GatewayDeclined && st.Amount == p.Amount && st.Currency == p.Currency:
		var done bool
		if r, done, err = s.reversedRefund(ctx, p, r, st); done {
			return r, err
		}
		detail = fmt.Sprintf("refund %q of %d pending, %d refunded here, the gateway has the payment declined with %d refunded",
			r.ID, r.Amount, p.Refunded, st.Canceled)
	case st.State != GatewayApproved || st.Amount != p.Amount || st.Currency != p.Currency:
		detail = fmt.Sprintf("refund %q of %d pending, recorded %d %s %s, the gateway has %d %s %s",
			r.ID, r.Amount, p.Amount, p.Currency, p.State, st.Amount, st.Currency, st.State)
	case st.Canceled-p.Refunded == 0:
		return s.cancel(ctx, r)
	case st.Canceled-p.Refunded == r.Amount:
		// As much more than the record as r: r, or a refund of the same amount made outside
		// the Service (in the PG's console). Only the PG's list of its refunds, by the ID each
		// was made under, tells which.
		made, found, listed := st.made(r.ID, r.Amount)
		switch {
		case found:
			wctx, done := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
			defer done()
			if r, err = s.settleRefund(wctx, r, RefundSucceeded, made.Reference, nil); err != nil {
				return r, err
			}
			return r, r.result(nil)
		case listed:
			detail = fmt.Sprintf("refund %q of %d pending, %d refunded here, the gateway has refunded %d, none of it under %q",
				r.ID, r.Amount, p.Refunded, st.Canceled, r.ID)
		default:
			detail = fmt.Sprintf("refund %q of %d pending, %d refunded here, the gateway has refunded %d and does not list its refunds",
				r.ID, r.Amount, p.Refunded, st.Canceled)
		}
	default:
		detail = fmt.Sprintf("refund %q of %d pending, %d refunded here, the gateway has refunded %d", r.ID, r.Amount, p.Refunded, st.Canceled)
	}
	// If r settled while the PG was asked (a racer may have made the next refund too), the
	// answer does not compare with the payment as read. Still PENDING, r was so throughout:
	// no other refund of the payment was made or settled meanwhile, so the contradiction is real.
	if r, err = s.GetRefund(ctx, r.ID); err != nil || r.State != RefundPending {
		return r, cmp.Or(err, r.result(nil))
	}
	s.logger.ErrorContext(ctx, "payment: the gateway contradicts the record of a refund; refund left pending",
		"refund", r.ID, "payment", p.ID, "order", p.OrderID, "detail", detail)
	s.contradicted(p.ID, CauseRefund, detail)
	return r, fmt.Errorf("%w: %s", ErrOutcomeUnknown, detail)
}

// codeNotMade is the FailureCode of a refund recorded FAILED by the PG's record rather than
// its refusal: the PG has the refund's payment, in REVIEW, declined and did not make it.
const codeNotMade = "PAYMENT_DECLINED_AT_GATEWAY"

// reversedRefund settles r, PENDING, of p, in REVIEW, by st, the PG's record of p: declined
// (the PG reversed its approval), for the recorded amount and currency. It never sends r:
// the refunded total of a payment the PG declined is not one to send a refund again on (a
// PG may clear it with the reversal), so a refund the PG made could be made twice. r is
// SUCCEEDED when the PG lists it as made under its ID and its total is the record's
// succeeded refunds plus r; FAILED (codeNotMade, its reservation released) when the PG
// refunded nothing beyond the record and lists its refunds, none under r's ID: it holds
// nothing of the payment to refund. A PG that does not list its refunds gives only a
// total, which its reversal may have cleared: no ground to record r as not made. done is
// false for any other record (a contradiction for a person), r left PENDING.
func (s *Service) reversedRefund(ctx context.Context, p Payment, r Refund, st GatewayPayment) (_ Refund, done bool, err error) {
	made, found, listed := st.made(r.ID, r.Amount)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	switch {
	case found && st.Canceled-p.Refunded == r.Amount:
		r, err = s.settleRefund(wctx, r, RefundSucceeded, made.Reference, nil)
	case !found && listed && st.Canceled == p.Refunded:
		s.logger.WarnContext(ctx, "payment: the gateway has a payment in review declined and never made its pending refund; refund failed",
			"refund", r.ID, "payment", p.ID, "order", p.OrderID, "decline_code", st.DeclineCode)
		r, err = s.settleRefund(wctx, r, RefundFailed, "", &DeclineError{Code: codeNotMade,
			Message: "the gateway has the payment declined (" + cmp.Or(st.DeclineCode, "no code") + ") and did not make this refund"})
	default:
		return r, false, nil
	}
	if err != nil {
		return r, true, err
	}
	return r, true, r.result(nil)
}

// result is the error Refund returns for r as recorded; callErr is the gateway's, if any.
func (r Refund) result(callErr error) error {
	switch r.State {
	case RefundFailed:
		return fmt.Errorf("%w: %w", ErrRefundRejected, &DeclineError{Code: r.FailureCode, Message: r.FailureMessage})
	case RefundPending:
		if classify(callErr) == outcomeNone {
			return callErr
		}
		if callErr == nil || errors.Is(callErr, ErrOutcomeUnknown) {
			return cmp.Or(callErr, ErrOutcomeUnknown)
		}
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, callErr)
	}
	return nil
}

// settleRefund moves r from PENDING to to, releasing its reservation and, when it succeeded,
// adding it to the payment's refunded total and moving the payment to PARTIALLY_REFUNDED or
// REFUNDED, all in one transaction. Only the first of racing settlements changes anything;
// the others return the refund as it was settled.
func (s *Service) settleRefund(ctx context.Context, r Refund, to RefundState, reference string, d *DeclineError) (Refund, error) {
	var moved *Transition
	changed := false
	at := s.now()
	err := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		moved, changed = nil, false
		// Lock the payment first, as the reservation does, so the two never deadlock.
		p, err := loadPayment(ctx, tx, r.PaymentID, true)
		if err != nil {
			return err
		}
		q := tx.NewUpdate().Model((*refundRow)(nil)).
			Set("state = ?", string(to)).
			Set("updated_at = ?", at).
			Where("id = ?", r.ID).
			Where("state = ?", string(RefundPending))
		if to == RefundSucceeded {
			q = q.Set("pg_reference = ?", truncate(reference, 128))
		} else {
			q = q.Set("failure_code = ?", truncate(d.Code, 64)).Set("failure_message = ?", truncate(d.Message, 255))
		}
		res, err := q.Exec(ctx)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		changed = true
		pq := tx.NewUpdate().Model((*paymentRow)(nil)).
			Set("refund_pending = refund_pending - ?", r.Amount).
			Set("updated_at = ?", at).
			Where("id = ?", p.ID)
		if to == RefundSucceeded {
			next := StatePartiallyRefunded
			switch {
			case p.State == StateReview:
				next = StateReview // a person decides; the refund is counted all the same
			case p.Refunded+r.Amount >= p.Amount:
				next = StateRefunded
			}
			pq = pq.Set("refunded = refunded + ?", r.Amount).Set("state = ?", string(next))
			if next != p.State {
				if !p.State.CanTransitionTo(next) {
					return &TransitionError{PaymentID: p.ID, From: p.State, To: next}
				}
				moved = &Transition{PaymentID: p.ID, From: p.State, To: next, Cause: CauseRefund, Detail: r.ID, At: at}
			}
		}
		if _, err := pq.Exec(ctx); err != nil {
			return err
		}
		if moved != nil {
			return insertTransition(ctx, tx, *moved)
		}
		return nil
	})
	if err != nil && changed && s.committed(ctx, err, func(db bun.IDB) *bun.SelectQuery {
		return db.NewSelect().Model((*refundRow)(nil)).Where("id = ?", r.ID).
			Where("state = ?", string(to)).Where("updated_at = ?", at)
	}) {
		err = nil
	}
	if err != nil {
		return r, fmt.Errorf("payment: settling refund %q: %w", r.ID, err)
	}
	if !changed {
		return s.GetRefund(ctx, r.ID)
	}
	r.State, r.UpdatedAt = to, at
	if to == RefundSucceeded {
		r.PGReference = truncate(reference, 128)
	} else {
		r.FailureCode, r.FailureMessage = truncate(d.Code, 64), truncate(d.Message, 255)
	}
	if moved != nil {
		s.transitioned(*moved)
	}
	s.refundSettled(r)
	return r, nil
}

// GetRefund returns the refund with the ID, or ErrRefundNotFound.
func (s *Service) GetRefund(ctx context.Context, id string) (Refund, error) {
	var row refundRow
	err := s.db.NewSelect().Model(&row).Where("id = ?", id).Scan(ctx)
	if sqlutil.IsNoRows(err) || err == nil && row.ID != id { // MySQL ignores trailing spaces
		return Refund{}, fmt.Errorf("%w: %q", ErrRefundNotFound, id)
	}
	if err != nil {
		return Refund{}, fmt.Errorf("payment: reading refund %q: %w", id, sqlutil.Unavailable(s.db, err))
	}
	return row.refund(), nil
}

// Refunds returns the refunds of a payment, oldest first.
func (s *Service) Refunds(ctx context.Context, paymentID string) ([]Refund, error) {
	var rows []refundRow
	if err := s.db.NewSelect().Model(&rows).Where("payment_id = ?", paymentID).Order("created_at", "id").Scan(ctx); err != nil {
		return nil, fmt.Errorf("payment: reading refunds of %q: %w", paymentID, sqlutil.Unavailable(s.db, err))
	}
	out := make([]Refund, 0, len(rows))
	for i := range rows {
		if rows[i].PaymentID == paymentID { // MySQL ignores trailing spaces
			out = append(out, rows[i].refund())
		}
	}
	return out, nil
}
