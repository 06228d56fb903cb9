package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/uptrace/bun"
)

// Hold sets amount of the user's available points aside under holdID until Capture, Void
// or its deadline (now + timeout) resolves it: user → held. It fails with an
// *InsufficientPointsError when the available points do not cover the amount. holdID
// shares its namespace with the transfer IDs of the other operations.
func (l *Ledger) Hold(ctx context.Context, holdID, user string, amount int64, timeout time.Duration) (Receipt, error) {
	timeout = timeout.Truncate(time.Microsecond)
	err := firstErr(checkID("holdID", holdID), checkID("user", user), checkAmount("amount", amount))
	if timeout <= 0 || timeout > MaxHoldTimeout {
		err = firstErr(err, invalid("timeout", "%s is not in 1µs..%s", timeout, MaxHoldTimeout))
	}
	t := l.draft(holdID, TypeHold, user, UserAccount(user), HeldAccount(user), amount, "")
	t.ExpiresAt = t.CreatedAt.Add(timeout)
	return l.transfer(ctx, "hold", err, t, applyHold)
}

func applyHold(ctx context.Context, tx bun.Tx, t *transferRow) error {
	if err := take(ctx, tx, t, t.Amount); err != nil {
		return err
	}
	h := &holdRow{ID: t.ID, UserID: t.UserID, Amount: t.Amount, State: HoldPending,
		Deadline: t.ExpiresAt, CreatedAt: t.CreatedAt}
	_, err := tx.NewInsert().Model(h).Exec(ctx)
	return err
}

// Capture posts amount (at most what the hold holds) of the hold: held → @redeemed; the
// rest of the hold goes back to the available points (held → user). A hold is resolved at
// most once: repeating the same Capture returns the original receipt; a Capture of another
// amount, or after Void, or once the hold is past its deadline fails with a *HoldError
// (ErrHoldCaptured, ErrHoldVoided, ErrHoldExpired), as do an unknown hold
// (ErrHoldNotFound) and an amount above the hold (ErrCaptureExceedsHold).
func (l *Ledger) Capture(ctx context.Context, holdID string, amount int64) (Receipt, error) {
	start := time.Now()
	err := firstErr(checkID("holdID", holdID), checkAmount("amount", amount))
	var r Receipt
	if err == nil {
		r, err = l.resolve(ctx, holdID, amount, true)
	}
	return r, l.finish(ctx, "capture", start, err)
}

// CaptureAll captures the whole hold: Capture of its amount, without the caller reading
// the hold first. Repeating it returns the original receipt, as does a Capture of the
// whole amount repeated as CaptureAll; after a partial Capture it fails with
// ErrHoldCaptured.
func (l *Ledger) CaptureAll(ctx context.Context, holdID string) (Receipt, error) {
	start := time.Now()
	err := checkID("holdID", holdID)
	var r Receipt
	if err == nil {
		r, err = l.resolve(ctx, holdID, wholeHold, true)
	}
	return r, l.finish(ctx, "capture", start, err)
}

// wholeHold is the amount resolve reads as "all the hold holds" (Capture refuses amounts
// below 1, so no caller's amount is mistaken for it).
const wholeHold = -1

// Void gives the whole hold back to the available points: held → user. Repeating it
// returns the original receipt; Void after Capture, or once the hold is past its deadline,
// fails with a *HoldError (ErrHoldCaptured, ErrHoldExpired), as does an unknown hold.
func (l *Ledger) Void(ctx context.Context, holdID string) (Receipt, error) {
	start := time.Now()
	err := checkID("holdID", holdID)
	var r Receipt
	if err == nil {
		r, err = l.resolve(ctx, holdID, 0, false)
	}
	return r, l.finish(ctx, "void", start, err)
}

// resolve captures amount of the hold (capture) or voids it.
func (l *Ledger) resolve(ctx context.Context, holdID string, amount int64, capture bool) (Receipt, error) {
	now := l.now()
	var r Receipt
	err := sqlutil.InTx(ctx, l.db, func(ctx context.Context, tx bun.Tx) error {
		h, found, err := findHold(ctx, tx, holdID)
		if err != nil {
			return err
		}
		if !found {
			return &HoldError{HoldID: holdID, Requested: max(amount, 0), Err: ErrHoldNotFound}
		}
		if amount == wholeHold {
			amount = h.Amount
		}
		herr := &HoldError{HoldID: holdID, State: h.State, Amount: h.Amount, Captured: h.Captured, Requested: amount}
		switch {
		case capture && h.State == HoldCaptured && h.Captured == amount, !capture && h.State == HoldVoided:
			r = h.resolution() // the same request again
			return nil
		case h.State == HoldCaptured:
			herr.Err = ErrHoldCaptured
		case h.State == HoldVoided:
			herr.Err = ErrHoldVoided
		case h.State == HoldExpired || !now.Before(h.Deadline):
			herr.State, herr.Err = HoldExpired, ErrHoldExpired
		case capture && amount > h.Amount:
			herr.Err = ErrCaptureExceedsHold
		case capture:
			r, err = settle(ctx, tx, &h, amount, HoldCaptured, now)
			return err
		default:
			r, err = settle(ctx, tx, &h, 0, HoldVoided, now)
			return err
		}
		return herr
	})
	return r, err
}

// settle resolves the pending (and locked) hold h into state: captured points go to
// @redeemed, the rest back to the user's available points.
func settle(ctx context.Context, tx bun.Tx, h *holdRow, captured int64, state HoldState, now time.Time) (Receipt, error) {
	rest := h.Amount - captured
	ok, err := moveAccount(ctx, tx, h.UserID, rest, -h.Amount, now)
	if err != nil {
		return Receipt{}, err
	}
	if !ok {
		return Receipt{}, fmt.Errorf("%w: account %q holds less than hold %q", ErrConflict, h.UserID, h.ID)
	}
	// after is the last journal row: its balance is the one after the whole move.
	var after *transferRow
	if captured > 0 {
		after = &transferRow{Kind: TypeCapture, UserID: h.UserID, Src: HeldAccount(h.UserID), Dst: AccountRedeemed,
			Amount: captured, ParentID: h.ID, CreatedAt: now}
		expiring, err := journal(ctx, tx, after, rest)
		if err != nil {
			return Receipt{}, err
		}
		if err := consume(ctx, tx, h.UserID, captured, expiring, now); err != nil {
			return Receipt{}, err
		}
	}
	if rest > 0 {
		kind := map[HoldState]EntryType{HoldCaptured: TypeRelease, HoldVoided: TypeVoid, HoldExpired: TypeHoldExpire}[state]
		t := &transferRow{Kind: kind, UserID: h.UserID, Src: HeldAccount(h.UserID), Dst: UserAccount(h.UserID),
			Amount: rest, ParentID: h.ID, CreatedAt: now}
		if after != nil { // the capture's balance, with the rest back
			t.AvailableAfter, t.HeldAfter = after.AvailableAfter+rest, after.HeldAfter-rest
			err = insertTransfer(ctx, tx, t)
		} else {
			_, err = journal(ctx, tx, t, 0)
		}
		if err != nil {
			return Receipt{}, err
		}
		after = t
	}
	// By primary key only: read through ledger_holds_due (state, deadline), as MariaDB
	// chose on a young table, the update next-key locked every pending hold and the end of
	// the index, and new holds waited for this transaction (TestResolveLocksOnlyItsHold).
	res, err := sqlutil.UpdateByPK[holdRow](tx).
		Set("state = ?", state).Set("captured = ?", captured).Set("resolved_at = ?", now).
		Set("available_after = ?", after.AvailableAfter).Set("held_after = ?", after.HeldAfter).
		Where("id = ?", h.ID).Where("state = ?", HoldPending).Exec(ctx)
	if err != nil {
		return Receipt{}, err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return Receipt{}, firstErr(err, fmt.Errorf("%w: hold %q resolved concurrently", ErrConflict, h.ID))
	}
	h.State, h.Captured, h.ResolvedAt, h.AvailableAfter, h.HeldAfter = state, captured, now, after.AvailableAfter, after.HeldAfter
	return h.resolution(), nil
}

// LookupHold returns the hold holdID, or a *HoldError matching ErrHoldNotFound.
func (l *Ledger) LookupHold(ctx context.Context, holdID string) (HoldInfo, error) {
	if err := checkID("holdID", holdID); err != nil {
		return HoldInfo{}, err
	}
	var h holdRow
	err := sqlutil.Columns[holdRow](l.db.NewSelect().Model(&h), "h").
		ColumnExpr("(SELECT t.refunded FROM ledger_transfers AS t WHERE t.id = h.id) AS refunded").
		Where("h.id = ?", holdID).Scan(ctx)
	switch {
	case sqlutil.IsNoRows(err):
		return HoldInfo{}, &HoldError{HoldID: holdID, Err: ErrHoldNotFound}
	case err != nil:
		return HoldInfo{}, l.translate(ctx, "lookup hold", err)
	}
	return HoldInfo{ID: h.ID, User: h.UserID, Amount: h.Amount, State: h.State, Captured: h.Captured,
		Refunded: h.Refunded, Deadline: h.Deadline.UTC(), CreatedAt: h.CreatedAt.UTC(), ResolvedAt: h.ResolvedAt.UTC()}, nil
}
