package commerce

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/payment"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Audit checks the invariants of the whole store and reports every discrepancy it finds
// (an error only when it cannot read something):
//
//   - stock: each product's reserved count in the inventory equals the units of the orders
//     whose reservation is live, and its sold count the units of the orders whose units
//     are sold (paid orders, not those cancelled since: their units were returned). Each
//     order's reservation is looked up by its ID; with the journaled Redis inventory and
//     the SQL one the lookup reads SQL, which keeps every reservation for ever, so a PAID
//     order stays clean however long ago it was paid;
//   - each order's reservation, coupon redemption, points hold and payment are in the state
//     its status implies (e.g. PAID: committed, confirmed, captured, APPROVED; CANCELLED
//     after payment: captured and refunded as the order says — in full, or less the
//     reward's shortfall, see Order.RefundPoints and Order.RefundAmount —, restored,
//     REFUNDED or PARTIALLY_REFUNDED of exactly that amount);
//   - the ledger holds the reward, clawback, points refund and top-up transfers the orders
//     and top-ups imply, and no other of them (a clawback of a reverted cancellation and
//     its refund: of equal amounts, at most the reward), and ledger.Verify finds no drift
//     (zero sum, balances = journal);
//   - every order has exactly the events its history implies (order-created, then
//     payment-completed, payment-failed, order-cancelled or order-expired), except those
//     older than the outbox's retention (WithEventRetention);
//   - every settled payment agrees with the PG's own record (payment.Service.CrossCheck:
//     one gateway call per payment), and none is under review.
//
// Orders in flight are checked too, so run it when the flows are quiet (after Recover) to
// get an exact answer; beside live traffic it may report a transient state. It reads every
// order and asks the leaves about each: it is an audit, not a per-request check.
func (s *Service) Audit(ctx context.Context) (Report, error) {
	a := &audit{s: s, now: s.now(), reserved: map[string]int64{}, sold: map[string]int64{},
		transfers: map[string]map[string]expectedTransfer{}}
	for _, step := range []func(context.Context) error{a.orders, a.topUps, a.stock, a.ledger, a.gatewayPayments} {
		if err := step(ctx); err != nil {
			return Report{}, sqlutil.Unavailable(s.db, err)
		}
	}
	return a.rep, nil
}

type audit struct {
	s        *Service
	now      time.Time
	rep      Report
	reserved map[string]int64 // SKU → units the orders hold
	sold     map[string]int64 // SKU → units the orders sold
	// transfers: user → transfer ID → what the ledger must hold.
	transfers map[string]map[string]expectedTransfer
	events    []expectedEvent
}

// expectedTransfer is a transfer the ledger must hold: of type typ and amount (none
// at all for 0). With refundedBy set it is a spend of any amount up to amount given
// back in full by the refund refundedBy, or neither exists.
type expectedTransfer struct {
	typ        ledger.EntryType
	amount     int64
	owner      string
	refundedBy string
}

type expectedEvent struct {
	id    string
	want  bool
	owner string
}

func (a *audit) add(kind, subject, format string, args ...any) {
	a.rep.Discrepancies = append(a.rep.Discrepancies, Discrepancy{Kind: kind, Subject: subject, Detail: fmt.Sprintf(format, args...)})
}

func (a *audit) expectTransfer(user, id string, typ ledger.EntryType, amount int64, owner string) {
	a.expect(user, id, expectedTransfer{typ: typ, amount: amount, owner: owner})
}

func (a *audit) expect(user, id string, t expectedTransfer) {
	if a.transfers[user] == nil {
		a.transfers[user] = map[string]expectedTransfer{}
	}
	a.transfers[user][id] = t
}

// expectEvent records whether an event must exist; events that happened before the
// outbox's retention may have been cleaned and are not checked.
func (a *audit) expectEvent(owner, typ string, want bool, at int64) {
	if want && micros(a.now.Add(-a.s.cfg.eventRetention)) > at {
		return
	}
	a.events = append(a.events, expectedEvent{id: EventID(owner, typ), want: want, owner: owner})
}

func (a *audit) orders(ctx context.Context) error {
	for after := ""; ; {
		var rows []*orderRow
		if err := a.s.db.NewSelect().Model(&rows).Where("id > ?", after).Order("id").Limit(500).Scan(ctx); err != nil {
			return fmt.Errorf("commerce: audit: read orders: %w", err)
		}
		if err := loadLines(ctx, a.s.db, rows); err != nil {
			return err
		}
		for _, r := range rows {
			after = r.ID
			a.rep.Orders++
			if err := a.order(ctx, r); err != nil {
				return err
			}
		}
		if err := a.checkEvents(ctx); err != nil {
			return err
		}
		if len(rows) < 500 {
			return nil
		}
	}
}

func (a *audit) order(ctx context.Context, r *orderRow) error {
	paid := r.PaidAt != 0
	for _, l := range r.Lines {
		switch {
		case r.Stock == stockReserved || r.Step == stepRelease:
			a.reserved[l.ProductID] += l.Qty
		case r.Stock == stockCommitted || r.Step == stepReturn:
			a.sold[l.ProductID] += l.Qty
		}
	}
	if r.Subtotal-r.Discount-r.Points != r.AmountDue || r.AmountDue < 0 {
		a.add("amounts", r.ID, "subtotal %d − discount %d − points %d ≠ amount due %d", r.Subtotal, r.Discount, r.Points, r.AmountDue)
	}
	cancelling := paid && (r.Status == StatusCancelling || r.Status == StatusCancelled)
	if r.Shortfall < 0 || r.Shortfall > min(r.Reward, r.Points+r.AmountDue) || r.Shortfall > 0 && !cancelling {
		a.add("amounts", r.ID, "order %s: reward shortfall %d of a reward of %d (paid %d)", r.Status, r.Shortfall, r.Reward, r.Points+r.AmountDue)
	}
	for _, check := range []func(context.Context, *orderRow) error{a.reservation, a.coupon, a.points, a.payment} {
		if err := check(ctx, r); err != nil {
			return err
		}
	}
	if r.Reward > 0 && paid {
		a.expectTransfer(r.UserID, rewardID(r.ID), ledger.TypeEarn, r.Reward, r.ID)
	}
	for k := 1; k <= r.CancelAttempt && r.Reward > 0; k++ {
		if k == r.CancelAttempt && cancelling { // what was left of the reward
			a.expectTransfer(r.UserID, clawbackID(r.ID, k), ledger.TypeSpend, r.Reward-r.Shortfall, r.ID)
			continue
		}
		// Reverted: whatever was clawed back was given back.
		a.expect(r.UserID, clawbackID(r.ID, k), expectedTransfer{typ: ledger.TypeSpend, amount: r.Reward, owner: r.ID,
			refundedBy: clawbackRevertID(r.ID, k)})
	}
	if r.Points > 0 && paid && r.Status == StatusCancelled {
		points, _ := r.refunds()
		a.expectTransfer(r.UserID, pointsRefundID(r.ID), ledger.TypeRefund, points, r.ID)
	}
	a.expectEvent(r.ID, EventOrderCreated, true, r.CreatedAt)
	a.expectEvent(r.ID, EventPaymentCompleted, paid, r.PaidAt)
	a.expectEvent(r.ID, EventPaymentFailed, r.Status == StatusPaymentFailed, r.ClosedAt)
	a.expectEvent(r.ID, EventOrderCancelled, r.Status == StatusCancelled, r.ClosedAt)
	a.expectEvent(r.ID, EventOrderExpired, r.Status == StatusExpired, r.ClosedAt)
	return nil
}

// reservation checks the order's stock reservation against what the order says of it.
func (a *audit) reservation(ctx context.Context, r *orderRow) error {
	res, err := a.s.inv.Get(ctx, r.ID)
	if errors.Is(err, inventory.ErrReservationNotFound) && !a.s.inv.JoinsTx() && r.Status.Final() && r.Step == "" {
		return nil // plain Redis forgets resolved reservations after its retention
	}
	if err != nil && !errors.Is(err, inventory.ErrReservationNotFound) {
		return fmt.Errorf("commerce: audit: reservation of %s: %w", r.ID, err)
	}
	want := map[string][]inventory.State{
		stockReserved:  {inventory.StateReserved},
		stockCommitted: {inventory.StateCommitted},
		stockReturned:  {inventory.StateReturned},
		stockReleased:  {inventory.StateReleased, inventory.StateExpired},
	}[r.Stock]
	switch r.Step {
	case stepRelease:
		want = append(want, inventory.StateReserved, inventory.StateCommitted)
	case stepReturn:
		want = append(want, inventory.StateCommitted)
	}
	if !slices.Contains(want, res.State) {
		a.add("reservation", r.ID, "order %s (stock %s): reservation %s, want %v", r.Status, r.Stock, stateOr(string(res.State)), want)
	}
	return nil
}

func (a *audit) coupon(ctx context.Context, r *orderRow) error {
	if r.CouponID == "" {
		return nil
	}
	reds, err := a.s.coup.Redemptions(ctx, r.ID)
	if err != nil {
		return fmt.Errorf("commerce: audit: redemptions of %s: %w", r.ID, err)
	}
	var want []coupon.RedemptionState
	switch r.Status {
	case StatusPendingPayment, StatusPaying:
		want = []coupon.RedemptionState{coupon.RedemptionReserved}
	case StatusPaid, StatusCancelling:
		want = []coupon.RedemptionState{coupon.RedemptionConfirmed}
	default:
		want = []coupon.RedemptionState{coupon.RedemptionRestored, coupon.RedemptionExpired}
	}
	if len(reds) != 1 || reds[0].CouponID != r.CouponID || !slices.Contains(want, reds[0].State) ||
		reds[0].Discount != r.Discount {
		a.add("coupon", r.ID, "order %s with coupon %s (discount %d): redemptions %+v, want one %v",
			r.Status, r.CouponID, r.Discount, reds, want)
	}
	return nil
}

func (a *audit) points(ctx context.Context, r *orderRow) error {
	if r.Points == 0 {
		return nil
	}
	h, err := a.s.led.LookupHold(ctx, holdID(r.ID))
	if err != nil && !errors.Is(err, ledger.ErrHoldNotFound) {
		return fmt.Errorf("commerce: audit: points hold of %s: %w", r.ID, err)
	}
	if h.State == ledger.HoldPending && !a.now.Before(h.Deadline) {
		h.State = ledger.HoldExpired // the ledger's next sweep gives the points back
	}
	var ok bool
	switch {
	case h.Amount != r.Points:
	case r.Status == StatusPendingPayment || r.Status == StatusPaying:
		ok = h.State == ledger.HoldPending
	case r.Status == StatusPaid || r.Status == StatusCancelling:
		ok = h.State == ledger.HoldCaptured && h.Captured == r.Points && h.Refunded == 0
	case r.Status == StatusCancelled && r.PaidAt != 0:
		points, _ := r.refunds()
		ok = h.State == ledger.HoldCaptured && h.Captured == r.Points && h.Refunded == points
	default:
		ok = h.State == ledger.HoldVoided || h.State == ledger.HoldExpired
	}
	if !ok {
		a.add("points", r.ID, "order %s with %d points: hold %s of %d, captured %d, refunded %d",
			r.Status, r.Points, stateOr(string(h.State)), h.Amount, h.Captured, h.Refunded)
	}
	return nil
}

func (a *audit) payment(ctx context.Context, r *orderRow) error {
	if r.PaymentID == "" {
		if r.AmountDue > 0 && r.PaidAt != 0 {
			a.add("payment", r.ID, "order %s paid %d without a payment", r.Status, r.AmountDue)
		}
		return nil
	}
	if err := a.earlierAttempts(ctx, r); err != nil {
		return err
	}
	p, err := a.s.pay.Get(ctx, r.PaymentID)
	if err != nil && !errors.Is(err, payment.ErrPaymentNotFound) {
		return fmt.Errorf("commerce: audit: payment of %s: %w", r.ID, err)
	}
	var want payment.State
	var refunded int64
	switch {
	case r.Status == StatusPaying || r.Status == StatusCancelling:
		return nil // in flight
	case r.PaidAt == 0 && p.State == payment.StateAbandoned:
		return nil // its last attempt never reached the PG; the order was reopened
	case r.PaidAt == 0 && p.State == payment.StateRefunded && p.Refunded == p.Amount && a.voided(ctx, p):
		return nil // abandoned, approved by the PG all the same, and given back
	case r.Status == StatusPaid:
		want = payment.StateApproved
	case r.Status == StatusCancelled:
		_, refunded = r.refunds()
		switch want = payment.StateRefunded; {
		case refunded == 0: // the reward's shortfall took all of it: nothing was refunded
			want = payment.StateApproved
		case refunded < r.AmountDue:
			want = payment.StatePartiallyRefunded
		}
	case r.FailureCode == FailureUnfulfillable:
		want, refunded = payment.StateRefunded, r.AmountDue
	case r.Status == StatusPaymentFailed:
		// Declined, or under review (FailurePaymentReview): unless the review was resolved,
		// giving back whatever the PG held (see reviewed).
		ok := reviewed(p) && (p.State != payment.StateReview || r.FailureCode == FailurePaymentReview)
		if !ok || p.Amount != r.AmountDue {
			a.add("payment", r.ID, "order %s (%s) due %d: payment %s of %d, refunded %d (%d pending); want DECLINED, REVIEW for a review, or given back",
				r.Status, r.FailureCode, r.AmountDue, stateOr(string(p.State)), p.Amount, p.Refunded, p.RefundPending)
		}
		return nil
	}
	if p.State != want || p.Amount != r.AmountDue || p.Refunded != refunded {
		a.add("payment", r.ID, "order %s due %d: payment %s of %d, refunded %d; want %s, refunded %d",
			r.Status, r.AmountDue, stateOr(string(p.State)), p.Amount, p.Refunded, want, refunded)
	}
	return nil
}

// voided reports whether p was abandoned, approved by the PG all the same, and so is given
// back (payment.Service.Voided); a failure to tell is reported as a discrepancy.
func (a *audit) voided(ctx context.Context, p payment.Payment) bool {
	voided, err := a.s.pay.Voided(ctx, p)
	if err != nil {
		a.add("payment", p.OrderID, "payment %s: cannot tell whether it was voided: %v", p.ID, err)
	}
	return voided
}

// earlierAttempts checks the payments of an order's earlier attempts, if it made several:
// each was abandoned (the PG was not reached) before the next. One the PG approved all the
// same (ABANDONED -> APPROVED) is a charge that no order pays by, until it is refunded.
func (a *audit) earlierAttempts(ctx context.Context, r *orderRow) error {
	if r.PaymentID == paymentID(r.ID) {
		return nil
	}
	ps, err := a.s.pay.ByOrder(ctx, r.ID)
	if err != nil {
		return fmt.Errorf("commerce: audit: payments of %s: %w", r.ID, err)
	}
	for _, p := range ps {
		if p.ID != r.PaymentID && p.State != payment.StateAbandoned && !(p.State == payment.StateRefunded && p.Refunded == p.Amount) {
			a.add("payment", r.ID, "order %s: payment %s of an earlier attempt is %s, not ABANDONED: charged %d that the order does not pay by",
				r.Status, p.ID, p.State, p.Amount-p.Refunded)
		}
	}
	return nil
}

func (a *audit) topUps(ctx context.Context) error {
	for after := ""; ; {
		var rows []*topUpRow
		if err := a.s.db.NewSelect().Model(&rows).Where("id > ?", after).Order("id").Limit(500).Scan(ctx); err != nil {
			return fmt.Errorf("commerce: audit: read top-ups: %w", err)
		}
		for _, t := range rows {
			after = t.ID
			a.rep.TopUps++
			if t.Status == TopUpPaying {
				continue
			}
			p, err := a.s.pay.Get(ctx, t.PaymentID)
			if err != nil && !errors.Is(err, payment.ErrPaymentNotFound) {
				return fmt.Errorf("commerce: audit: payment of %s: %w", t.ID, err)
			}
			want := payment.StateDeclined
			switch {
			case t.FailureCode == FailurePaymentReview && reviewed(p), reviewed(p) && p.State != payment.StateReview:
				want = p.State // declined, under review, or the review resolved: given back
			case t.FailureCode == FailurePaymentReview:
				want = payment.StateReview
			case t.FailureCode == FailurePGUnreached:
				want = payment.StateAbandoned
				if p.State != want && a.voided(ctx, p) { // approved all the same: given back
					want = payment.StateRefunded
				}
			}
			if t.Status == TopUpCompleted {
				want = payment.StateApproved
				a.expectTransfer(t.UserID, t.ID, ledger.TypeCharge, t.Amount, t.ID)
			}
			if p.State != want || p.Amount != t.Amount {
				a.add("payment", t.ID, "top-up %s of %d: payment %s of %d", t.Status, t.Amount, stateOr(string(p.State)), p.Amount)
			}
			a.expectEvent(t.ID, EventPointsCharged, t.Status == TopUpCompleted, t.UpdatedAt)
		}
		if err := a.checkEvents(ctx); err != nil {
			return err
		}
		if len(rows) < 500 {
			return nil
		}
	}
}

// checkEvents looks the expected events up in the outbox and forgets them.
func (a *audit) checkEvents(ctx context.Context) error {
	if len(a.events) == 0 {
		return nil
	}
	ids := make([]string, len(a.events))
	for i, e := range a.events {
		ids[i] = e.id
	}
	var found []string
	for chunk := range slices.Chunk(ids, 500) {
		var got []string
		err := a.s.db.NewSelect().Table(outbox.TableEvents).Column("id").Where("id IN (?)", bun.List(chunk)).Scan(ctx, &got)
		if err != nil {
			return fmt.Errorf("commerce: audit: read outbox: %w", err)
		}
		found = append(found, got...)
	}
	for _, e := range a.events {
		if has := slices.Contains(found, e.id); has != e.want {
			a.add("event", e.owner, "event %s: present %v, want %v", e.id, has, e.want)
		}
	}
	a.events = a.events[:0]
	return nil
}

// stock compares each product's reserved and sold counts with the orders'.
func (a *audit) stock(ctx context.Context) error {
	var ids []string
	if err := a.s.db.NewSelect().Model((*productRow)(nil)).Column("id").Order("id").Scan(ctx, &ids); err != nil {
		return fmt.Errorf("commerce: audit: read products: %w", err)
	}
	a.rep.Products = len(ids)
	for chunk := range slices.Chunk(ids, inventory.MaxStocksPerCall) {
		stocks, err := a.s.inv.Stocks(ctx, chunk)
		if err != nil {
			return fmt.Errorf("commerce: audit: read stock: %w", err)
		}
		for _, id := range chunk {
			st, ok := stocks[id]
			if !ok {
				a.add("stock", id, "product has no stock in the inventory")
				continue
			}
			if st.Reserved != a.reserved[id] {
				a.add("stock.reserved", id, "inventory reserves %d units, live orders hold %d", st.Reserved, a.reserved[id])
			}
			if st.Sold != a.sold[id] {
				a.add("stock.sold", id, "inventory sold %d units, orders bought %d", st.Sold, a.sold[id])
			}
		}
	}
	return nil
}

// ledger checks the transfers the orders and top-ups imply, then runs ledger.Verify.
func (a *audit) ledger(ctx context.Context) error {
	users := make([]string, 0, len(a.transfers))
	for u := range a.transfers {
		users = append(users, u)
	}
	slices.Sort(users)
	for _, user := range users {
		seen := map[string]ledger.Entry{}
		for cursor := ""; ; {
			page, err := a.s.led.History(ctx, user, cursor, ledger.MaxHistoryLimit)
			if err != nil {
				return fmt.Errorf("commerce: audit: history of %s: %w", user, err)
			}
			for _, e := range page.Entries {
				if _, dup := seen[e.ID]; !dup {
					seen[e.ID] = e
				}
			}
			if cursor = page.Next; cursor == "" {
				break
			}
		}
		ids := make([]string, 0, len(a.transfers[user]))
		for id := range a.transfers[user] {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			a.transfer(id, a.transfers[user][id], seen)
		}
	}
	rep, err := a.s.led.Verify(ctx)
	if err != nil && !errors.Is(err, ledger.ErrDrift) {
		return fmt.Errorf("commerce: audit: verify ledger: %w", err)
	}
	for _, d := range rep.Drift {
		a.add("ledger", string(d.Account), "%s", d.String())
	}
	return nil
}

// transfer checks the ledger's entries (seen, by ID) against the transfer id expected.
func (a *audit) transfer(id string, want expectedTransfer, seen map[string]ledger.Entry) {
	e, ok := seen[id]
	switch {
	case want.refundedBy != "":
		r, rok := seen[want.refundedBy]
		if ok != rok || ok && (e.Type != want.typ || e.Amount > want.amount || r.Type != ledger.TypeRefund || r.Amount != e.Amount) {
			a.add("ledger", want.owner, "transfer %s: want none, or a %s of at most %d refunded in full by %s; found %s of %d, refund %s of %d",
				id, want.typ, want.amount, want.refundedBy, stateOr(string(e.Type)), e.Amount, stateOr(string(r.Type)), r.Amount)
		}
	case want.amount == 0:
		if ok {
			a.add("ledger", want.owner, "transfer %s: want none, found %s of %d", id, e.Type, e.Amount)
		}
	case !ok || e.Type != want.typ || e.Amount != want.amount:
		a.add("ledger", want.owner, "transfer %s: want %s of %d, found %s of %d", id, want.typ, want.amount, stateOr(string(e.Type)), e.Amount)
	}
}

func stateOr(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// reviewed reports whether p, the payment of a failed order or top-up, holds nothing or is
// under review: DECLINED, in REVIEW, or given back by ResolveReview (REFUNDED, or its
// refund still pending).
func reviewed(p payment.Payment) bool {
	switch p.State {
	case payment.StateReview:
		return true
	case payment.StateDeclined:
		return p.Refunded == 0
	case payment.StateApproved, payment.StatePartiallyRefunded, payment.StateRefunded:
		return p.Refunded+p.RefundPending == p.Amount
	}
	return false
}
