package payment

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/sqlutil"
)

type paymentRow struct {
	bun.BaseModel `bun:"table:payment_payments"`

	ID             string    `bun:"id,pk"`
	OrderID        string    `bun:"order_id"`
	Amount         int64     `bun:"amount"`
	Currency       string    `bun:"currency"`
	Method         string    `bun:"method"`
	Token          string    `bun:"token"`
	State          string    `bun:"state"`
	PGReference    string    `bun:"pg_reference"`
	DeclineCode    string    `bun:"decline_code"`
	DeclineMessage string    `bun:"decline_message"`
	Refunded       int64     `bun:"refunded"`
	RefundPending  int64     `bun:"refund_pending"`
	CreatedAt      time.Time `bun:"created_at"`
	UpdatedAt      time.Time `bun:"updated_at"`
}

type transitionRow struct {
	bun.BaseModel `bun:"table:payment_transitions"`

	ID        int64     `bun:"id,pk,autoincrement"`
	PaymentID string    `bun:"payment_id"`
	FromState string    `bun:"from_state"`
	ToState   string    `bun:"to_state"`
	Cause     string    `bun:"cause"`
	Detail    string    `bun:"detail"`
	CreatedAt time.Time `bun:"created_at"`
}

func rowOf(p Payment) *paymentRow {
	return &paymentRow{
		ID: p.ID, OrderID: p.OrderID, Amount: p.Amount, Currency: p.Currency, Method: string(p.Method),
		Token: p.Token, State: string(p.State), PGReference: p.PGReference, DeclineCode: p.DeclineCode,
		DeclineMessage: p.DeclineMessage, Refunded: p.Refunded, RefundPending: p.RefundPending,
		CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt,
	}
}

func (r *paymentRow) payment() Payment {
	return Payment{
		ID: r.ID, OrderID: r.OrderID, Amount: r.Amount, Currency: r.Currency, Method: Method(r.Method),
		Token: r.Token, State: State(r.State), PGReference: r.PGReference, DeclineCode: r.DeclineCode,
		DeclineMessage: r.DeclineMessage, Refunded: r.Refunded, RefundPending: r.RefundPending,
		CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(),
	}
}

func (r *transitionRow) transition() Transition {
	return Transition{
		PaymentID: r.PaymentID, From: State(r.FromState), To: State(r.ToState), Cause: Cause(r.Cause),
		Detail: r.Detail, At: r.CreatedAt.UTC(),
	}
}

// insertTransition records t in tx.
func insertTransition(ctx context.Context, tx bun.IDB, t Transition) error {
	_, err := tx.NewInsert().Model(&transitionRow{
		PaymentID: t.PaymentID, FromState: string(t.From), ToState: string(t.To), Cause: string(t.Cause),
		Detail: t.Detail, CreatedAt: t.At,
	}).Exec(ctx)
	if err != nil {
		return fmt.Errorf("payment: recording transition of %q to %s: %w", t.PaymentID, t.To, err)
	}
	return nil
}

// loadPayment reads one payment, ErrPaymentNotFound if there is none. lock takes a row lock
// (FOR UPDATE on MySQL) for the rest of the transaction db must then be.
func loadPayment(ctx context.Context, db bun.IDB, id string, lock bool) (Payment, error) {
	var row paymentRow
	q := db.NewSelect().Model(&row).Where("id = ?", id)
	if lock {
		q = sqlutil.ForUpdate(q)
	}
	err := q.Scan(ctx)
	if sqlutil.IsNoRows(err) || err == nil && row.ID != id { // MySQL ignores trailing spaces
		return Payment{}, fmt.Errorf("%w: %q", ErrPaymentNotFound, id)
	}
	if err != nil {
		return Payment{}, fmt.Errorf("payment: reading %q: %w", id, sqlutil.Unavailable(db, err))
	}
	return row.payment(), nil
}

// insertPayment records a new REQUESTED payment and its creation through db: in a
// transaction of its own (a *bun.DB), or under a savepoint of the caller's (a bun.Tx). It
// reports false when a payment with the ID already exists; in a caller's transaction
// without the savepoint (sqlutil.AllOrNothing) that is an error, the caller rolling back.
func insertPayment(ctx context.Context, db bun.IDB, p Payment) (bool, error) {
	err := sqlutil.InTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(rowOf(p)).Exec(ctx); err != nil {
			return err
		}
		return insertTransition(ctx, tx, Transition{
			PaymentID: p.ID, To: StateRequested, Cause: CauseCreated, At: p.CreatedAt,
		})
	})
	switch {
	case err == nil:
		return true, nil
	case sqlutil.IsDuplicateKey(err) && !errors.Is(err, sqlutil.ErrNotUndone):
		return false, nil
	default:
		return false, fmt.Errorf("payment: recording %q: %w", p.ID, err)
	}
}

// change is what a settlement writes besides the state.
type change struct {
	cause          Cause
	detail         string
	reference      string
	declineCode    string
	declineMessage string
	// untaken makes the move also conditional on no submitter ever having taken the
	// payment up (see Service.takeUp, which moves updated_at past created_at): being taken
	// up since it was read is not enough, as a submitter that took it up before may still
	// have its call on the way to the PG. With takenAt set, the Attempt making the move
	// took the payment up itself when no one had (at takenAt, see Service.takeUpFirst): the
	// move is then conditional on no one else having taken it up since.
	untaken bool
	takenAt time.Time
}

// casState moves p from p.State (as last read) to to, with ch, and records the transition,
// in one transaction of its own. It reports false, changing nothing, when p is no longer in
// p.State: the conditional update (WHERE state = the state read) is what makes every
// settlement happen exactly once however many webhooks, retries and reconcilers race for it.
func (s *Service) casState(ctx context.Context, p Payment, to State, ch change, at time.Time) (bool, error) {
	changed := false
	err := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		changed = false
		q := tx.NewUpdate().Model((*paymentRow)(nil)).
			Set("state = ?", string(to)).
			Set("updated_at = ?", at).
			Where("id = ?", p.ID).
			Where("state = ?", string(p.State))
		switch {
		case ch.untaken && ch.takenAt.IsZero():
			q = q.Where("updated_at = created_at")
		case ch.untaken:
			q = q.Where("updated_at = ?", ch.takenAt)
		}
		if ch.reference != "" {
			q = q.Set("pg_reference = ?", ch.reference)
		}
		if to == StateDeclined {
			q = q.Set("decline_code = ?", ch.declineCode).Set("decline_message = ?", ch.declineMessage)
		}
		res, err := q.Exec(ctx)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		changed = true
		if p.State == StateAbandoned && to == StateApproved {
			if err := recordVoid(ctx, tx, p, at); err != nil {
				return err
			}
		}
		return insertTransition(ctx, tx, Transition{
			PaymentID: p.ID, From: p.State, To: to, Cause: ch.cause, Detail: ch.detail, At: at,
		})
	})
	if err != nil && changed && s.committed(ctx, err, func(db bun.IDB) *bun.SelectQuery {
		return transitionQuery(db, Transition{PaymentID: p.ID, From: p.State, To: to, Cause: ch.cause, At: at})
	}) {
		err = nil
	}
	if err != nil {
		return false, fmt.Errorf("payment: moving %q from %s to %s: %w", p.ID, p.State, to, err)
	}
	return changed, nil
}

// committed reports, after a transaction failed with err (the database unavailable: its
// connection cut, say), whether it committed all the same: its COMMIT ran and only the
// answer was lost. The change is then taken as made, so that it is logged and told to the
// Observer once, and the caller answers as it would have. find selects the rows that only
// that transaction wrote (its transition, or its row as it set it, down to the
// microsecond of its time); a read that fails too reports false, and the outcome stays
// the error.
func (s *Service) committed(ctx context.Context, err error, find func(db bun.IDB) *bun.SelectQuery) bool {
	if !errors.Is(err, errcode.ErrUnavailable) || ctx.Err() != nil {
		return false
	}
	n, cerr := find(s.db).Count(ctx)
	if cerr != nil || n == 0 {
		return false
	}
	s.logger.WarnContext(ctx, "payment: a transaction's answer was lost, and it had committed", "err", err)
	return true
}

// transitionQuery selects t's row: the payment entered t.To once (payment_transitions_once),
// from t.From, by t.Cause, at t.At.
func transitionQuery(db bun.IDB, t Transition) *bun.SelectQuery {
	return db.NewSelect().Model((*transitionRow)(nil)).
		Where("payment_id = ?", t.PaymentID).Where("to_state = ?", string(t.To)).
		Where("from_state = ?", string(t.From)).Where("cause = ?", string(t.Cause)).
		Where("created_at = ?", t.At)
}

// truncate makes s valid UTF-8 of at most n characters, for VARCHAR(n) columns.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}

// voidReason is the reason of the refund of an abandoned payment the PG approved all the same.
const voidReason = "abandoned payment approved by the gateway"

// refundIDOf names a refund the Service itself makes of a payment: prefix + the payment ID,
// or prefix + a digest of the payment ID when that would exceed MaxIDLen.
func refundIDOf(prefix, paymentID string) string {
	if id := prefix + paymentID; len(id) <= MaxIDLen {
		return id
	}
	sum := sha256.Sum256([]byte(paymentID))
	return prefix + hex.EncodeToString(sum[:20])
}

// voidRefundID names the refund of an abandoned payment the PG approved all the same.
func voidRefundID(paymentID string) string { return refundIDOf("void-", paymentID) }

// reservedRefundID reports whether id has the form of a name refundIDOf gives a refund the
// Service makes itself: "void-", or "review" or "console" with an attempt number or none,
// then "-" (see attempt). A caller's refund never takes such a name: the refund of another
// payment named "void-<p>" would make the move of the abandoned payment p to APPROVED fail
// on the refund's unique key, so its charge would never be given back, and a refund of p
// itself so named would make Voided report p as voided.
func reservedRefundID(id string) bool {
	if strings.HasPrefix(id, "void-") {
		return true
	}
	for _, name := range []string{"review", "console"} {
		if rest, ok := strings.CutPrefix(id, name); ok {
			if strings.HasPrefix(strings.TrimLeft(rest, "0123456789"), "-") {
				return true
			}
		}
	}
	return false
}

// recordVoid records in tx, with the move of the abandoned payment p to APPROVED, the refund
// of all of it, PENDING, its amount reserved: Attempt told its caller nothing was charged and
// nothing fulfils this payment, so the charge the PG made anyway is given back. Recorded
// with the move, it cannot be lost to a crash: the Reconciler completes it like any other
// pending refund.
func recordVoid(ctx context.Context, tx bun.Tx, p Payment, at time.Time) error {
	if _, err := tx.NewUpdate().Model((*paymentRow)(nil)).Set("refund_pending = ?", p.Amount).
		Where("id = ?", p.ID).Exec(ctx); err != nil {
		return err
	}
	_, err := tx.NewInsert().Model(&refundRow{ID: voidRefundID(p.ID), PaymentID: p.ID, Amount: p.Amount, Reason: voidReason,
		State: string(RefundPending), CreatedAt: at, UpdatedAt: at}).Exec(ctx)
	return err
}
