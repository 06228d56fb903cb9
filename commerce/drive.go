package commerce

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// step is what one transition of an order does besides moving it (see move).
type step struct {
	// do runs in the transaction, after the conditional transition: the leaves' work, which
	// may record more in next (next.Stock, say).
	do func(ctx context.Context, tx bun.Tx, next *orderRow) error
	// event is the order event written in the transaction ("" for none).
	event string
	// fault is the fault hook's step name, consulted last in the transaction ("" for none).
	fault string
	// outcome is counted once the transaction committed ("" for none).
	outcome Outcome
	// allOrNothing says do returns every failure of a leaf (so the transaction rolls
	// back): its leaf calls need no savepoints (sqlutil.AllOrNothing). A do that goes on
	// past some refusals (a hold already gone) keeps them.
	allOrNothing bool
}

// move is the one step driver of every order flow. It moves the order r, as last read, to
// what edit makes of a copy of it, in one transaction: first the conditional transition
// (WHERE status, step, payment ID and cancellation attempt are still r's: of racing flows
// exactly one wins; a loser changes nothing and gets errLostRace), then st.event, then st.do, then the fault hook. After the
// commit it wakes the relay, counts st.outcome, leaves r as the order now is, and, when the
// transition left stock work for after its transaction (an inventory outside SQL: step
// "release" or "return"), does it.
func (s *Service) move(ctx context.Context, r *orderRow, now time.Time, edit func(next *orderRow), st step) error {
	next := *r
	edit(&next)
	next.UpdatedAt = micros(now)
	var err error
	if st.do == nil && st.event == "" && st.fault == "" {
		// Nothing else: no transaction needed (but a retry on deadlock, as InTx's).
		err = sqlutil.Retry(ctx, s.db, func(ctx context.Context) error { return claim(ctx, s.db, r, &next, now) })
	} else {
		err = sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
			n := next // fresh copy for every attempt
			if err := claim(ctx, tx, r, &n, now); err != nil {
				return err
			}
			whole := sqlutil.AllOrNothing(ctx)
			if st.event != "" { // before do, which may lock a hot stock row until the commit
				if err := s.orderEvent(whole, tx, &n, st.event, now); err != nil {
					return err
				}
			}
			if st.do != nil {
				moved, dctx := n, ctx
				if st.allOrNothing {
					dctx = whole
				}
				if err := st.do(dctx, tx, &n); err != nil {
					return err
				}
				if set := changes(&moved, &n); len(set) > 0 { // what do recorded (next.Stock)
					if _, err := setColumns(tx.NewUpdate().Model((*orderRow)(nil)).Where("id = ?", r.ID), set).Exec(ctx); err != nil {
						return fmt.Errorf("commerce: update order %s: %w", r.ID, err)
					}
				}
			}
			if err := s.step(st.fault); err != nil {
				return err
			}
			next = n
			return nil
		})
	}
	if err != nil {
		return err
	}
	if st.event != "" {
		s.notify()
	}
	if st.outcome != "" {
		s.observe(st.outcome, next.methodLabel(), r.AmountDue)
	}
	*r = next
	if r.Step != stepRelease && r.Step != stepReturn {
		return nil
	}
	if err := s.step(StepStockPending); err != nil {
		return err
	}
	// The order's outcome is committed: its units are freed whether or not the client
	// still waits (ctx's cancellation is ignored, its deadline kept).
	sctx, cancel := detached(ctx, s.holdTTL())
	defer cancel()
	s.finishStockLater(sctx, r)
	return nil
}

// claim moves r to next through db if the order is still in r's state (its status and
// step, in the same payment and cancellation attempt), else fails with errLostRace.
func claim(ctx context.Context, db bun.IDB, r, next *orderRow, now time.Time) error {
	won, err := transition(ctx, db, r.ID, r.state(), now, changes(r, next))
	if err == nil && !won {
		err = errLostRace
	}
	return err
}

// changes returns the columns whose values differ from a to b.
func changes(a, b *orderRow) map[string]any {
	set := make(map[string]any)
	for _, c := range []struct {
		col      string
		from, to any
	}{
		{"status", a.Status, b.Status}, {"step", a.Step, b.Step}, {"stock", a.Stock, b.Stock},
		{"failure_code", a.FailureCode, b.FailureCode}, {"reward", a.Reward, b.Reward},
		{"reward_shortfall", a.Shortfall, b.Shortfall},
		{"paid_at", a.PaidAt, b.PaidAt}, {"closed_at", a.ClosedAt, b.ClosedAt},
		{"cancel_attempt", a.CancelAttempt, b.CancelAttempt}, {"pay_key", a.PayKey, b.PayKey},
		{"pay_fingerprint", a.PayFingerprint, b.PayFingerprint}, {"pay_method", a.PayMethod, b.PayMethod},
		{"pay_token", a.PayToken, b.PayToken}, {"payment_id", a.PaymentID, b.PaymentID},
	} {
		if c.from != c.to {
			set[c.col] = c.to
		}
	}
	return set
}

// closeUnpaid moves an unpaid order (PENDING_PAYMENT, or PAYING) to the final status to
// and gives everything it holds back, with event and outcome, in one transaction (see
// giveBack; with an inventory outside SQL its units right after, under step "release").
func (s *Service) closeUnpaid(ctx context.Context, r *orderRow, to Status, event string, outcome Outcome, failureCode string) error {
	now := s.now()
	return s.move(ctx, r, now, func(n *orderRow) {
		n.Status, n.Step, n.Stock, n.ClosedAt, n.FailureCode = to, s.stock.later(stepRelease), stockReleased, micros(now), failureCode
	}, step{do: s.giveBack, event: event, fault: StepCompensate, outcome: outcome})
}

// resume continues an order with work left from its persisted step, as far as it can go
// now, and returns it as it is then: the flow that recorded the step takes it up. ask says
// whether to ask the gateway about an unsettled payment (a client's request) or to leave
// that to the payment reconciler (recovery).
func (s *Service) resume(ctx context.Context, r *orderRow, ask bool) (Order, error) {
	var err error
	switch r.Step {
	case stepPay:
		err = s.settlePayment(ctx, r, ask)
	case stepRefund:
		err = s.refundLateApproval(ctx, r, ask)
	case stepCancel, stepCancelShort:
		err = s.settleCancel(ctx, r, ask)
	case stepRelease, stepReturn:
		err = s.finishStock(ctx, r)
	}
	if err != nil && !errors.Is(err, errLostRace) {
		return Order{}, err
	}
	return s.current(ctx, r.ID)
}

// detached returns ctx without its cancellation but with a deadline: ctx's, or at the
// latest limit from now. The work it carries outlives the client that asked for it, but
// never its holds: bounded by their TTL, it cannot hang forever on a hung database (a DSN
// without readTimeout), nor commit an order whose reservation has already expired.
func detached(ctx context.Context, limit time.Duration) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(limit)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	return context.WithDeadline(context.WithoutCancel(ctx), deadline)
}
