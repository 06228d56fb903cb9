package commerce

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
)

// Step boundaries of TopUp, as the fault hook sees them.
const (
	StepTopUpRecorded = "topup.recorded" // the top-up is recorded PAYING; the PG is not called yet
	StepTopUpApproved = "topup.approved" // the PG approved; the points are not charged yet
)

// TopUp buys points: a payment of Amount won through the gateway, then a ledger Charge of
// Amount points, idempotent end to end on (UserID, IdempotencyKey). The top-up is recorded
// PAYING, with its payment REQUESTED (payment ID "pay-<top-up>") in the same transaction,
// before the gateway is called, and the Charge (transfer ID = the top-up ID) commits with
// the COMPLETED status and the points-charged event. A decline makes it FAILED; an unknown
// outcome leaves it PAYING until the payment reconciler settles the payment and Recover
// completes it; a crash between the payment and the Charge is completed by Recover too.
// While the PG is known to be down (payment.Service.Ready: its circuit breaker open) a new
// top-up fails at once with an error matching errcode.ErrUnavailable, nothing recorded. A
// call the PG certainly did not receive (payment.ErrGatewayUnavailable) gives the payment up
// (ABANDONED, nothing charged) and fails the same way; the top-up stays PAYING, and the
// client's retry with the key makes a new attempt under a new payment ID
// ("pay-<top-up>-<n>"). One whose client does not come back within the order expiry is
// FAILED (FailurePGUnreached) by recovery. Repeating the request returns the top-up as it is
// (continuing it if in flight); the same key with another request fails with
// *ConflictError. A top-up whose points would take the user's past ledger.MaxBalance is
// refused before anything is recorded or charged (*ledger.BalanceLimitError).
func (s *Service) TopUp(ctx context.Context, req TopUpRequest) (TopUp, error) {
	if err := checkID("UserID", req.UserID); err != nil {
		return TopUp{}, err
	}
	if err := checkKey(req.IdempotencyKey); err != nil {
		return TopUp{}, err
	}
	if req.Amount < 1 || req.Amount > MaxTopUp {
		return TopUp{}, invalid("Amount", fmt.Sprintf("must be 1..%d", MaxTopUp))
	}
	if req.Method != payment.MethodCard && req.Method != payment.MethodBNPL {
		return TopUp{}, invalid("Method", "must be CARD or BNPL")
	}
	if err := payment.CheckToken(req.Token); err != nil {
		return TopUp{}, err
	}
	plan := payment.Plan{OrderAmount: req.Amount, Currency: Currency, Parts: []payment.Part{{Method: req.Method, Amount: req.Amount}}}
	if err := plan.Validate(); err != nil {
		return TopUp{}, leafError(err)
	}
	id := topUpID(req.UserID, req.IdempotencyKey)
	fp := fingerprint("topup", strconv.FormatInt(req.Amount, 10), string(req.Method), req.Token)
	now := micros(s.now())
	row := &topUpRow{
		ID: id, UserID: req.UserID, IdemKey: req.IdempotencyKey, Fingerprint: fp, Amount: req.Amount,
		Method: string(req.Method), Token: req.Token, Status: TopUpPaying, PaymentID: paymentID(id),
		CreatedAt: now, UpdatedAt: now,
	}
	// The PG known to be down (its circuit breaker open): a new top-up is refused at once,
	// nothing recorded; one recorded before is answered as it is.
	down := s.pay.Ready()
	err := down
	if down == nil {
		err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.NewInsert().Model(row).Exec(ctx); err != nil {
				return err
			}
			if err := s.roomFor(ctx, tx, row); err != nil {
				return err
			}
			_, err := s.pay.Request(sqlutil.AllOrNothing(ctx), tx, row.payRequest())
			return err
		})
	}
	fresh := err == nil // this call recorded the top-up and its payment
	if err != nil {
		if down == nil && !sqlutil.IsDuplicateKey(err) {
			return TopUp{}, fmt.Errorf("commerce: record top-up: %w", err)
		}
		if row, err = s.loadTopUp(ctx, id); err != nil {
			if down != nil && errors.Is(err, ErrTopUpNotFound) {
				return TopUp{}, fmt.Errorf("commerce: top-up: %w", down)
			}
			return TopUp{}, err
		}
		if row.Fingerprint != fp {
			return TopUp{}, NewConflictError("top-up", req.IdempotencyKey)
		}
		if row, fresh, err = s.retryAbandoned(ctx, row, down); err != nil {
			return TopUp{}, err
		}
	} else if err := s.step(StepTopUpRecorded); err != nil {
		return TopUp{}, err
	}
	return s.advanceTopUp(ctx, row, true, fresh)
}

// roomFor refuses, before anything is charged, a new top-up whose points would take the
// user's past ledger.MaxBalance (a *ledger.BalanceLimitError). A top-up recorded earlier
// and still in flight is not counted: its Charge, settling a payment, may pass MaxBalance
// (the ledger refuses a charge only past twice it), so it always completes.
func (s *Service) roomFor(ctx context.Context, tx bun.Tx, row *topUpRow) error {
	b, err := s.led.WithTx(tx).Balance(ctx, row.UserID)
	if err != nil {
		return fmt.Errorf("commerce: read the points of %s: %w", row.UserID, err)
	}
	if b.Total > ledger.MaxBalance-row.Amount {
		return &ledger.BalanceLimitError{User: row.UserID, Total: b.Total + row.Amount, Requested: row.Amount, Limit: ledger.MaxBalance}
	}
	return nil
}

// retryAbandoned gives a PAYING top-up whose payment was abandoned (the PG was not reached:
// nothing charged) a new attempt, as its client asks again: a new payment, "pay-<top-up>-<n>",
// recorded with the top-up's move to it in one transaction, conditional on the top-up
// still being on the abandoned one (of two racing retries, one makes the attempt and the
// other takes it up); while the PG is known to be down (down, from payment.Service.Ready)
// the answer is down's, nothing recorded. Any other top-up is returned as it is. A failure
// to read its payment, or whether that was voided, is the answer, nothing recorded. made
// reports whether this call recorded the new attempt.
func (s *Service) retryAbandoned(ctx context.Context, row *topUpRow, down error) (_ *topUpRow, made bool, _ error) {
	if row.Status != TopUpPaying {
		return row, false, nil
	}
	p, err := s.pay.Get(ctx, row.PaymentID)
	switch {
	case errors.Is(err, payment.ErrPaymentNotFound):
		return row, false, nil // unrecorded: advanceTopUp records and submits it
	case err != nil:
		return nil, false, fmt.Errorf("commerce: retry top-up %s: %w", row.ID, err)
	}
	if p.State != payment.StateAbandoned {
		// Abandoned and then approved by the PG all the same, its charge given back
		// (payment.Service.Voided): abandoned as well.
		voided, err := s.pay.Voided(ctx, p)
		if err != nil {
			return nil, false, fmt.Errorf("commerce: retry top-up %s: %w", row.ID, err)
		}
		if !voided {
			return row, false, nil
		}
	}
	if down != nil {
		return nil, false, fmt.Errorf("commerce: top-up %s: %w", row.ID, down)
	}
	next := *row
	next.PaymentID, next.UpdatedAt = nextPaymentID(row.ID, row.PaymentID), micros(s.now())
	err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		res, err := sqlutil.UpdateByPK[topUpRow](tx).Set("payment_id = ?", next.PaymentID).Set("updated_at = ?", next.UpdatedAt).
			Where("id = ?", row.ID).Where("status = ?", TopUpPaying).Where("payment_id = ?", row.PaymentID).Exec(ctx)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return cmp.Or(err, errLostRace)
		}
		_, err = s.pay.Request(sqlutil.AllOrNothing(ctx), tx, next.payRequest())
		return err
	})
	switch {
	case err == nil:
		return &next, true, nil
	case errors.Is(err, errLostRace):
		row, err = s.loadTopUp(ctx, row.ID)
		return row, false, err
	}
	return nil, false, fmt.Errorf("commerce: retry top-up %s: %w", row.ID, err)
}

// GetTopUp returns a top-up of the actor (any for an admin; another user's is
// ErrTopUpNotFound).
func (s *Service) GetTopUp(ctx context.Context, topUpID string, by Actor) (TopUp, error) {
	if err := checkID("TopUpID", topUpID); err != nil {
		return TopUp{}, err
	}
	row, err := s.loadTopUp(ctx, topUpID)
	if err != nil {
		return TopUp{}, err
	}
	if !by.Admin && row.UserID != by.UserID {
		return TopUp{}, fmt.Errorf("%w: %s", ErrTopUpNotFound, topUpID)
	}
	return row.topUp(), nil
}

// advanceTopUp settles a PAYING top-up as far as it can now; ask as in getOrSubmit; fresh
// when this call recorded the top-up's payment.
func (s *Service) advanceTopUp(ctx context.Context, row *topUpRow, ask, fresh bool) (TopUp, error) {
	if row.Status != TopUpPaying {
		return row.topUp(), nil
	}
	// The call that recorded the payment gives it up when the PG is certainly not reached
	// (see Pay); a replay takes it up (Submit), since the first call may still be on its
	// way to the PG, and an abandoned payment must never be charged.
	submit := s.pay.Submit
	if fresh {
		submit = s.pay.Attempt
	}
	p, err := s.chargeBy(ctx, row.payRequest(), ask, submit)
	if !fresh { // (a payment this call has just sent was not abandoned before)
		if voided, verr := s.pay.Voided(ctx, p); verr != nil {
			return TopUp{}, fmt.Errorf("commerce: pay top-up %s: %w", row.ID, verr)
		} else if voided {
			// Abandoned, then approved by the PG all the same: the payment package gives
			// that charge back, so nothing is credited on it; the top-up is as abandoned.
			p.State, err = payment.StateAbandoned, nil
		}
	}
	switch {
	case p.State == payment.StateApproved:
		if err := s.step(StepTopUpApproved); err != nil {
			return TopUp{}, err
		}
		err = s.completeTopUp(ctx, row)
	case p.State == payment.StateAbandoned && ask:
		// Nothing charged: the client is told to come back (503), and its retry with the
		// key makes a new attempt (retryAbandoned).
		return TopUp{}, s.pgUnreached("top-up "+row.ID, err)
	case p.State == payment.StateAbandoned:
		// Waiting for its client; one that has not come back within the order expiry is
		// failed, so that recovery stops visiting it.
		err = nil
		if micros(s.now().Add(-s.cfg.expiry)) >= row.CreatedAt {
			err = s.finishTopUp(ctx, s.db, row, TopUpFailed, FailurePGUnreached)
		}
	case p.State == payment.StateDeclined:
		err = s.finishTopUp(ctx, s.db, row, TopUpFailed, p.DeclineCode)
	case p.State == payment.StateReview:
		err = s.finishTopUp(ctx, s.db, row, TopUpFailed, FailurePaymentReview)
	case pending(err):
		err = nil // PAYING until the reconciler settles it
	default:
		err = fmt.Errorf("commerce: pay top-up %s: %w", row.ID, err)
	}
	if err != nil && !errors.Is(err, errLostRace) {
		return TopUp{}, err
	}
	if row, err = s.loadTopUp(ctx, row.ID); err != nil {
		return TopUp{}, err
	}
	return row.topUp(), nil
}

// completeTopUp charges the points, marks the top-up COMPLETED and writes its event, in one
// transaction.
func (s *Service) completeTopUp(ctx context.Context, row *topUpRow) error {
	err := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		if err := s.finishTopUp(ctx, tx, row, TopUpCompleted, ""); err != nil {
			return err
		}
		if _, err := s.led.WithTx(tx).Charge(ctx, ledger.ChargeRequest{
			ID: row.ID, User: row.UserID, Amount: row.Amount, Reference: row.PaymentID,
		}); err != nil {
			return fmt.Errorf("commerce: charge points of %s: %w", row.ID, err)
		}
		return s.addEvent(ctx, tx, row.ID, EventPointsCharged, TopUpEvent{
			SchemaVersion: EventSchemaVersion, TopUpID: row.ID, UserID: row.UserID, Amount: row.Amount, PaymentID: row.PaymentID, At: s.now(),
		})
	})
	if err != nil {
		return err
	}
	s.notify()
	s.observe(OutcomeToppedUp, row.Method, row.Amount)
	return nil
}

// finishTopUp moves a PAYING top-up to status (conditionally; errLostRace if it is not
// PAYING any more, or not on row's payment: a client's retry moved it to a new attempt
// since row was read), reading it by its primary key only (TestFinishTopUpLocksOneRow).
func (s *Service) finishTopUp(ctx context.Context, db bun.IDB, row *topUpRow, status TopUpStatus, code string) error {
	res, err := sqlutil.UpdateByPK[topUpRow](db).Set("status = ?", status).Set("failure_code = ?", code).
		Set("updated_at = ?", micros(s.now())).Where("id = ?", row.ID).Where("status = ?", TopUpPaying).Where("payment_id = ?", row.PaymentID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("commerce: update top-up %s: %w", row.ID, sqlutil.Unavailable(db, err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("commerce: update top-up %s: %w", row.ID, sqlutil.Unavailable(db, err))
	}
	if n != 1 {
		return errLostRace
	}
	return nil
}

func (s *Service) loadTopUp(ctx context.Context, id string) (*topUpRow, error) {
	row := new(topUpRow)
	if err := s.db.NewSelect().Model(row).Where("id = ?", id).Scan(ctx); err != nil {
		if sqlutil.IsNoRows(err) {
			return nil, fmt.Errorf("%w: %s", ErrTopUpNotFound, id)
		}
		return nil, fmt.Errorf("commerce: read top-up %s: %w", id, sqlutil.Unavailable(s.db, err))
	}
	return row, nil
}
