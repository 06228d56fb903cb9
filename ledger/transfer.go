package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/uptrace/bun"
)

// Charge adds bought points to the user's balance, typically after the payment for them
// succeeded: @charged → user. It fails with a *BalanceLimitError when the user's points
// would pass twice MaxBalance (see MaxBalance).
func (l *Ledger) Charge(ctx context.Context, r ChargeRequest) (Receipt, error) {
	err := firstErr(checkID("ID", r.ID), checkID("User", r.User), checkAmount("Amount", r.Amount),
		checkText("Reference", r.Reference, MaxReferenceLen))
	t := l.draft(r.ID, TypeCharge, r.User, AccountCharged, UserAccount(r.User), r.Amount, r.Reference)
	return l.transfer(ctx, "charge", err, t, applyCredit)
}

// Earn adds reward points to the user's balance: @rewarded → user. With a non-zero
// ExpiresAt, what is left of them at that time leaves the balance (see Sweep); until
// then they are spent before any other points, soonest expiry first.
func (l *Ledger) Earn(ctx context.Context, r EarnRequest) (Receipt, error) {
	t := l.draft(r.ID, TypeEarn, r.User, AccountRewarded, UserAccount(r.User), r.Amount, r.Reference)
	err := firstErr(checkID("ID", r.ID), checkID("User", r.User), checkAmount("Amount", r.Amount),
		checkText("Reference", r.Reference, MaxReferenceLen))
	if !r.ExpiresAt.IsZero() {
		t.ExpiresAt = r.ExpiresAt.UTC().Truncate(time.Microsecond)
		switch past := !t.ExpiresAt.After(t.CreatedAt); {
		case past && err == nil:
			// The request may have been valid when first sent: a repeat of it is answered
			// from the journal.
			err = &lateError{invalid("ExpiresAt", "%s must be after now and within 100 years", r.ExpiresAt)}
		case past || t.ExpiresAt.Sub(t.CreatedAt) > maxExpiry:
			err = firstErr(err, invalid("ExpiresAt", "%s must be after now and within 100 years", r.ExpiresAt))
		}
	}
	return l.transfer(ctx, "earn", err, t, applyCredit)
}

// lateError is a request refused only because the clock has moved on since it could have
// been valid (an earn whose expiry has passed): an earlier transfer with its ID answers a
// repeat of it, as it answers one that could no longer be applied.
type lateError struct{ error }

func (e *lateError) Unwrap() error { return e.error }

// Spend takes points from the user's available balance: user → @redeemed. It fails with
// an *InsufficientPointsError when the available points do not cover the amount.
func (l *Ledger) Spend(ctx context.Context, r SpendRequest) (Receipt, error) {
	err := firstErr(checkID("ID", r.ID), checkID("User", r.User), checkAmount("Amount", r.Amount),
		checkText("Reference", r.Reference, MaxReferenceLen))
	t := l.draft(r.ID, TypeSpend, r.User, UserAccount(r.User), AccountRedeemed, r.Amount, r.Reference)
	return l.transfer(ctx, "spend", err, t, applyDebit)
}

// Refund gives back points taken by an earlier Spend, or captured from a Hold:
// @redeemed → user. Refunds may be partial; together they never exceed what the spend
// took (*RefundError). Refunded points do not expire, whatever points the spend used.
func (l *Ledger) Refund(ctx context.Context, r RefundRequest) (Receipt, error) {
	err := firstErr(checkID("ID", r.ID), checkID("SpendID", r.SpendID), checkAmount("Amount", r.Amount),
		checkText("Reference", r.Reference, MaxReferenceLen))
	t := l.draft(r.ID, TypeRefund, "", AccountRedeemed, "", r.Amount, r.Reference)
	t.ParentID = r.SpendID
	return l.transfer(ctx, "refund", err, t, applyRefund)
}

// Adjust corrects the user's balance by Delta, with a reason: @adjusted → user for a
// positive delta, user → @adjusted for a negative one (which must be covered by the
// available points).
func (l *Ledger) Adjust(ctx context.Context, r AdjustRequest) (Receipt, error) {
	err := firstErr(checkID("ID", r.ID), checkID("User", r.User),
		checkText("Reason", r.Reason, MaxReasonLen), checkText("Reference", r.Reference, MaxReferenceLen))
	switch {
	case r.Delta == 0 || r.Delta < -MaxAmount || r.Delta > MaxAmount:
		err = firstErr(err, invalid("Delta", "%d is not in ±1..%d", r.Delta, int64(MaxAmount)))
	case r.Reason == "":
		err = firstErr(err, invalid("Reason", "empty"))
	}
	apply, src, dst, amount := applyCredit, AccountAdjusted, UserAccount(r.User), r.Delta
	if r.Delta < 0 {
		apply, src, dst, amount = applyDebit, dst, src, -r.Delta
	}
	t := l.draft(r.ID, TypeAdjust, r.User, src, dst, amount, r.Reference)
	t.Reason = r.Reason
	return l.transfer(ctx, "adjust", err, t, apply)
}

// draft is the journal row a request asks for, before the balance after it is known.
func (l *Ledger) draft(id string, kind EntryType, user string, src, dst Account, amount int64, ref string) transferRow {
	return transferRow{ID: id, Kind: kind, UserID: user, Src: src, Dst: dst, Amount: amount,
		Reference: ref, CreatedAt: l.now()}
}

// applyFunc performs a drafted transfer in tx: it moves the points, completes t with the
// balance after, and appends it to the journal.
type applyFunc func(ctx context.Context, tx bun.Tx, t *transferRow) error

// transfer runs a caller's transfer idempotently. A transfer whose ID is already in the
// journal (the insert hits the unique key, or the operation is rejected and an earlier
// transfer has the ID) is answered from the journal: the original receipt when the content
// is the same, an *IDReusedError otherwise.
func (l *Ledger) transfer(ctx context.Context, op string, invalid error, draft transferRow, apply applyFunc) (Receipt, error) {
	start := time.Now()
	var late *lateError
	if invalid != nil && !errors.As(invalid, &late) {
		return Receipt{}, l.finish(ctx, op, start, invalid)
	}
	err := invalid
	dup := false
	if late == nil {
		var t transferRow
		err = sqlutil.InTx(ctx, l.db, func(ctx context.Context, tx bun.Tx) error {
			t = draft
			return apply(ctx, tx, &t)
		})
		if err == nil {
			return t.receipt(), l.finish(ctx, op, start, nil)
		}
		dup = errors.Is(err, errDuplicate)
		// Without a savepoint (sqlutil.AllOrNothing) our writes stay: no answer from the
		// journal over them; the caller rolls back.
		if !dup && !isRejection(err) || errors.Is(err, sqlutil.ErrNotUndone) {
			return Receipt{}, l.finish(ctx, op, start, err)
		}
	}
	// Our writes are rolled back. Read the latest committed transfer with this ID (a
	// duplicate key means it exists): inside a caller's transaction a plain read would see
	// only its snapshot, while a locking read of a missing row would lock a gap until the
	// caller commits, so the rejection path there reads the snapshot.
	prev, found, ferr := findTransfer(ctx, l.db, draft.ID, dup || !sqlutil.IsTx(l.db))
	switch {
	case ferr != nil:
		err = ferr
	case !found && dup:
		err = fmt.Errorf("%w: transfer %q collided with one that is gone", ErrConflict, draft.ID)
	case !found && late != nil:
		err = late.error // the validation error itself
	case !found:
		// err is the rejection.
	case !prev.sameContent(&draft):
		err = &IDReusedError{Kind: string(prev.Kind), Key: draft.ID, Err: ErrIDReused}
	default:
		return prev.receipt(), l.finish(ctx, op, start, nil)
	}
	return Receipt{}, l.finish(ctx, op, start, err)
}

// isRejection reports whether err is a business rejection that an earlier transfer with
// the same ID would override (its receipt wins).
func isRejection(err error) bool {
	return errors.Is(err, ErrInsufficientPoints) || errors.Is(err, ErrBalanceLimit) || errors.Is(err, ErrSpendNotFound) ||
		errors.Is(err, ErrRefundExceedsSpend)
}

// applyCredit adds t.Amount to the user's available points, creating the account on first
// use; an expiring earn also opens a lot.
func applyCredit(ctx context.Context, tx bun.Tx, t *transferRow) error {
	expiring := int64(0)
	if !t.ExpiresAt.IsZero() {
		expiring = t.Amount
	}
	if err := creditAccount(ctx, tx, t.UserID, t.Amount, expiring, t.CreatedAt); err != nil {
		return err
	}
	if err := credited(ctx, tx, t); err != nil || expiring == 0 {
		return err
	}
	lot := &lotRow{ID: t.ID, UserID: t.UserID, Remaining: t.Amount, ExpiresAt: t.ExpiresAt}
	_, err := tx.NewInsert().Model(lot).Exec(ctx)
	return err
}

// applyDebit takes t.Amount from the user's available points for good.
func applyDebit(ctx context.Context, tx bun.Tx, t *transferRow) error {
	return take(ctx, tx, t, 0)
}

// take moves t.Amount out of the user's available points, into held points when held is
// t.Amount (a hold) or out of the balance when held is 0, in which case the points also
// leave the user's lots of expiring points.
func take(ctx context.Context, tx bun.Tx, t *transferRow, held int64) error {
	ok, err := moveAccount(ctx, tx, t.UserID, -t.Amount, held, t.CreatedAt)
	if err != nil {
		return err
	}
	if !ok {
		a, err := readAccount(ctx, tx, t.UserID, false)
		return firstErr(err, &InsufficientPointsError{User: t.UserID, Available: a.Available, Requested: t.Amount})
	}
	expiring, err := journal(ctx, tx, t, 0)
	if err != nil || held != 0 {
		return err
	}
	return consume(ctx, tx, t.UserID, t.Amount, expiring, t.CreatedAt)
}

// applyRefund gives back t.Amount of the spend (or captured hold) t.ParentID.
func applyRefund(ctx context.Context, tx bun.Tx, t *transferRow) error {
	spend, found, err := findTransfer(ctx, tx, t.ParentID, true)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("%w: no transfer %q", ErrSpendNotFound, t.ParentID)
	}
	spent := spend.Amount
	switch spend.Kind {
	case TypeSpend:
	case TypeHold:
		h, _, err := findHold(ctx, tx, spend.ID)
		if err != nil {
			return err
		}
		if h.State != HoldCaptured {
			return fmt.Errorf("%w: hold %q is %s, not captured", ErrSpendNotFound, h.ID, h.State)
		}
		spent = h.Captured
	default:
		return fmt.Errorf("%w: transfer %q is a %s, not a spend", ErrSpendNotFound, spend.ID, spend.Kind)
	}
	if spend.Refunded+t.Amount > spent {
		return &RefundError{SpendID: spend.ID, Spent: spent, Refunded: spend.Refunded, Requested: t.Amount}
	}
	res, err := tx.ExecContext(ctx, "UPDATE ledger_transfers SET refunded = refunded + ? WHERE seq = ? AND refunded = ?",
		t.Amount, spend.Seq, spend.Refunded)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return firstErr(err, fmt.Errorf("%w: refunds of %q changed concurrently", ErrConflict, spend.ID))
	}
	t.UserID, t.Dst = spend.UserID, UserAccount(spend.UserID)
	if err := creditAccount(ctx, tx, t.UserID, t.Amount, 0, t.CreatedAt); err != nil {
		return err
	}
	return credited(ctx, tx, t)
}

// credited appends the credit t, just added to its user's account, to the journal, unless
// it took the user's points past their limit (see MaxBalance): then the caller's
// transaction is to roll back. Checking the balance the journal reads anyway costs no
// statement.
func credited(ctx context.Context, tx bun.Tx, t *transferRow) error {
	if _, err := journal(ctx, tx, t, 0); err != nil {
		return err
	}
	limit := int64(MaxBalance)
	if t.Kind == TypeCharge || t.Kind == TypeRefund {
		limit = maxSettledBalance
	}
	if total := t.AvailableAfter + t.HeldAfter; total > limit {
		return &BalanceLimitError{User: t.UserID, Total: total, Requested: t.Amount, Limit: limit}
	}
	return nil
}
