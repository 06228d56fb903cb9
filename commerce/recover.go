package commerce

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Recover drives every order and top-up with work left forward from its persisted state,
// whatever its age: orders PAYING (the payment's outcome, as the payment package has
// recorded it, completes or fails them, or, when it was abandoned because the PG was not
// reached, reopens them for another Pay; a payment never recorded is submitted again with
// the same ID), orders whose late approval is being refunded, orders CANCELLING (the refund,
// then the cancellation), final orders whose stock is still to be released or returned
// outside SQL, and top-ups PAYING. Every step it takes is one the interrupted flow would
// have taken, with the same IDs, so nothing is applied twice and nothing is left undone.
// It does not ask the gateway about payments still unsettled: that is the reconciler's job
// (payment.Reconciler), after which the next Recover continues.
//
// Call it at start-up, after a crash; Run calls it periodically (for orders idle longer than
// WithRecovery's age). It is safe beside live traffic and other Recover calls: conditional
// transitions decide every race. An order that fails does not stop the pass: the error
// returned joins the failures (the report counts them), and the next pass tries again.
func (s *Service) Recover(ctx context.Context) (RecoverReport, error) {
	return s.recoverPass(ctx, 0)
}

// recoverPass recovers the orders and top-ups unchanged for at least minAge.
func (s *Service) recoverPass(ctx context.Context, minAge time.Duration) (RecoverReport, error) {
	var (
		rep  RecoverReport
		errs []error
	)
	cutoff := micros(s.now().Add(-minAge))
	err := inFlight(ctx, s.db, "orders", "step <> ?", "", cutoff, func(r *orderRow) {
		rep.Examined++
		r, err := loadOrder(ctx, s.db, r.ID)
		if err == nil {
			before := r.Status + Status("/"+r.Step)
			var o Order
			o, err = s.resume(ctx, r, false)
			err = s.tally(&rep, err, before != o.Status+Status("/"+o.Step), r.ID)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}, func(r *orderRow) string { return r.ID })
	if err == nil {
		err = inFlight(ctx, s.db, "top-ups", "status = ?", TopUpPaying, cutoff, func(row *topUpRow) {
			rep.Examined++
			t, err := s.advanceTopUp(ctx, row, false, false)
			if err = s.tally(&rep, err, err == nil && t.Status != TopUpPaying, row.ID); err != nil {
				errs = append(errs, err)
			}
		}, func(row *topUpRow) string { return row.ID })
	}
	if err != nil {
		return rep, err
	}
	return rep, errors.Join(errs...)
}

// inFlight calls fn with every row of T (orders or top-ups: what) matching where (with
// its one argument arg) and unchanged since cutoff, in batches by ID; it stops at the first failure to list them or
// when ctx is done.
func inFlight[T any](ctx context.Context, db bun.IDB, what, where string, arg any, cutoff int64, fn func(*T), id func(*T) string) error {
	const batch = 100
	for after := ""; ; {
		var rows []*T
		err := db.NewSelect().Model(&rows).Where(where, arg).Where("id > ?", after).
			Where("updated_at <= ?", cutoff).Order("id").Limit(batch).Scan(ctx)
		if err != nil {
			return fmt.Errorf("commerce: list %s in flight: %w", what, sqlutil.Unavailable(db, err))
		}
		for _, row := range rows {
			if err := ctx.Err(); err != nil {
				return err
			}
			after = id(row)
			fn(row)
		}
		if len(rows) < batch {
			return nil
		}
	}
}

// tally counts an outcome and returns the error worth reporting, if any.
func (s *Service) tally(rep *RecoverReport, err error, moved bool, id string) error {
	switch {
	case errors.Is(err, ErrRefundRejected):
		rep.Advanced++ // the cancellation was undone: the order is PAID again
	case err != nil:
		rep.Failed++
		return fmt.Errorf("commerce: recover %s: %w", id, err)
	case moved:
		rep.Advanced++
	default:
		rep.Waiting++
	}
	return nil
}
