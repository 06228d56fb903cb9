package commerce

import (
	"context"
	"errors"
	"fmt"

	"github.com/uptrace/bun"

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

// stockOp is one operation on the inventory (or on its transactional copy).
type stockOp func(ctx context.Context, inv *inventory.Inventory) error

// early runs op now when the inventory cannot join the transaction that follows.
func (st stockStep) early(ctx context.Context, op stockOp) error {
	if st.inv.JoinsTx() {
		return nil
	}
	return op(ctx, st.inv)
}

// within runs op inside tx when the inventory joins it.
func (st stockStep) within(ctx context.Context, tx bun.Tx, op stockOp) error {
	if !st.inv.JoinsTx() {
		return nil
	}
	return op(ctx, st.inv.WithTx(tx))
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

// reserveOp holds the units of an order.
func reserveOp(req inventory.ReserveRequest) stockOp {
	return func(ctx context.Context, inv *inventory.Inventory) error {
		if _, err := inv.Reserve(ctx, req); err != nil {
			return fmt.Errorf("commerce: reserve stock: %w", err)
		}
		return nil
	}
}

// commitOp sells the units of an order.
func commitOp(id string) stockOp {
	return func(ctx context.Context, inv *inventory.Inventory) error {
		if err := inv.Commit(ctx, id); err != nil {
			return fmt.Errorf("commerce: commit stock of %s: %w", id, err)
		}
		return nil
	}
}

// releaseOp gives an order's reserved units back and records in r.Stock what became of
// them: released (or expired: back too), or, if they turn out to have been sold (an
// inventory outside SQL committed them before the order could be completed), returned.
func releaseOp(r *orderRow) stockOp {
	return func(ctx context.Context, inv *inventory.Inventory) error {
		err := inv.Release(ctx, r.ID)
		switch {
		case err == nil, errors.Is(err, inventory.ErrReservationExpired), errors.Is(err, inventory.ErrReservationReleased):
			r.Stock = stockReleased
			return nil
		case errors.Is(err, inventory.ErrReservationCommitted):
			r.Stock = stockReturned
			return returnOp(r)(ctx, inv)
		case errors.Is(err, inventory.ErrReservationReturned):
			r.Stock = stockReturned
			return nil
		case errors.Is(err, inventory.ErrReservationNotFound) && !inv.JoinsTx():
			// An inventory that forgets (plain Redis: restarted empty, or past its
			// retention): its units are not held any more.
			r.Stock = stockReleased
			return nil
		}
		return fmt.Errorf("commerce: release stock of %s: %w", r.ID, err)
	}
}

// returnOp puts a sold order's units back on sale: the inventory's committed → returned
// transition, recorded with the reservation, so it happens once however often it runs.
func returnOp(r *orderRow) stockOp {
	return func(ctx context.Context, inv *inventory.Inventory) error {
		err := inv.Return(ctx, r.ID)
		if errors.Is(err, inventory.ErrReservationNotFound) && !inv.JoinsTx() {
			// Plain Redis forgot the reservation after its retention: whether its units came
			// back cannot be known, so none are added (never oversell).
			return nil
		}
		if err != nil {
			return fmt.Errorf("commerce: return stock of %s: %w", r.ID, err)
		}
		return nil
	}
}

// setStockOp sets a product's stock.
func setStockOp(setting inventory.StockSetting) stockOp {
	return func(ctx context.Context, inv *inventory.Inventory) error {
		if _, err := inv.SetStock(ctx, setting); err != nil {
			return fmt.Errorf("commerce: set stock of %s: %w", setting.SKU, err)
		}
		return nil
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
