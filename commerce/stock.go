package commerce

import (
	"context"
	"errors"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/hold"
	"github.com/commercekit/commercekit/inventory"
)

// stockStep is checkout's one stock step. Every flow calls it at the same two places —
// early (before its transaction) and within (inside it) — and records later (a step on
// the order row) for the work that frees units after a final transition; the stock step
// decides where the work really happens:
//
//   - an inventory that joins the transaction (SQL) does everything within it, so the
//     order and its stock commit or roll back together;
//   - one that cannot (Redis, journaled or not) takes units early (reserve, commit: a
//     failure then leaves them held, never oversold, until a retry with the same ID or
//     their deadline) and frees them later, after the order's final transition committed,
//     under a step Recover retries until done (release, return: both idempotent, and with
//     the journaled Redis inventory idempotent for ever).
type stockStep struct{ inv *inventory.Inventory }

// stockOp is one operation on the stock holder (or on its transactional copy).
type stockOp func(ctx context.Context, h stockHolds) error

// early runs op now when the inventory cannot join the transaction that follows.
func (st stockStep) early(ctx context.Context, op stockOp) error {
	if st.inv.JoinsTx() {
		return nil
	}
	return op(ctx, stockHolds(st)) // the inventory itself
}

// within runs op inside tx when the inventory joins it.
func (st stockStep) within(ctx context.Context, tx bun.Tx, op stockOp) error {
	if !st.inv.JoinsTx() {
		return nil
	}
	return op(ctx, stockHolds{st.inv.WithTx(tx)})
}

// later returns the step to record on a final transition whose freeing stock work (step:
// stepRelease or stepReturn) is left for after its transaction: none when the inventory
// joins the transaction, which does the work within it.
func (st stockStep) later(step string) string {
	if st.inv.JoinsTx() {
		return ""
	}
	return step
}

// commitOp sells the units of an order.
func commitOp(id string) stockOp {
	return func(ctx context.Context, h stockHolds) error { return h.Post(ctx, id) }
}

// releaseOp gives an order's reserved units back and records in r.Stock what became of
// them: released (or expired: back too), or, if they turn out to have been sold (an
// inventory outside SQL committed them before the order could be completed), returned.
func releaseOp(r *orderRow) stockOp {
	return func(ctx context.Context, h stockHolds) error {
		err := h.Void(ctx, r.ID)
		switch {
		case err == nil, errors.Is(err, hold.ErrVoided):
			r.Stock = stockReleased
			return nil
		case errors.Is(err, inventory.ErrReservationCommitted):
			r.Stock = stockReturned
			return returnOp(r)(ctx, h)
		case errors.Is(err, inventory.ErrReservationReturned):
			r.Stock = stockReturned
			return nil
		case errors.Is(err, hold.ErrGone) && !h.inv.JoinsTx():
			// An inventory that forgets (plain Redis: restarted empty, or past its
			// retention): its units are not held any more.
			r.Stock = stockReleased
			return nil
		}
		return err
	}
}

// returnOp puts a sold order's units back on sale: the inventory's committed → returned
// transition, recorded with the reservation, so it happens once however often it runs.
func returnOp(r *orderRow) stockOp {
	return func(ctx context.Context, h stockHolds) error {
		err := h.Return(ctx, r.ID)
		if errors.Is(err, hold.ErrGone) && !h.inv.JoinsTx() {
			// Plain Redis forgot the reservation after its retention: whether its units came
			// back cannot be known, so none are added (never oversell).
			return nil
		}
		return err
	}
}

// setStockOp sets a product's stock.
func setStockOp(setting inventory.StockSetting) stockOp {
	return func(ctx context.Context, h stockHolds) error {
		if _, err := h.inv.SetStock(ctx, setting); err != nil {
			return fmt.Errorf("commerce: set stock of %s: %w", setting.SKU, err)
		}
		return nil
	}
}

// finishStock does the stock work left after a final transition when the inventory is
// outside SQL (step release or return), then clears the step.
func (s *Service) finishStock(ctx context.Context, r *orderRow) error {
	done := *r
	op := returnOp(&done)
	if r.Step == stepRelease {
		op = releaseOp(&done)
	}
	if err := op(ctx, stockHolds{s.inv}); err != nil {
		return err
	}
	return s.move(ctx, r, s.now(), func(n *orderRow) { n.Step, n.Stock = "", done.Stock }, step{})
}

// finishStockLater finishes the stock work of an order that is already final; a failure
// (the inventory unreachable, say) is logged and left to Recover, since the order's outcome
// is decided and committed.
func (s *Service) finishStockLater(ctx context.Context, r *orderRow) {
	if err := s.finishStock(ctx, r); err != nil && !errors.Is(err, errLostRace) {
		s.cfg.log.Warn("commerce: stock work left to recovery", "order", r.ID, "step", r.Step, "err", err)
	}
}

// abandoned reports whether a failed PlaceOrder should give its reservation back at once:
// when the request itself was refused (its retry would be refused again) or the caller's
// PlaceOrderRequest.InTx aborted it. After any other failure (a crash, a database error)
// the units stay held for a retry with the same key, which finds the same reservation, or
// until its deadline.
func abandoned(err error) bool {
	for _, target := range []error{ErrInvalidRequest, ErrProductNotFound, ErrCouponUnusable, ErrInsufficientPoints,
		ErrPaymentRule, ErrIdempotencyConflict, ErrUnpaidLimit} {
		if errors.Is(err, target) {
			return true
		}
	}
	var aborted abortedError
	return errors.As(err, &aborted)
}

// abortedError marks the error of a PlaceOrderRequest.InTx, which aborts the order.
type abortedError struct{ err error }

func (e abortedError) Error() string { return e.err.Error() }
func (e abortedError) Unwrap() error { return e.err }
