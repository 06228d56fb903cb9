package commerce

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/hold"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/ledger"
)

// Checkout holds three things per order, all under IDs derived from the order and all with
// the same deadline (the order's expiry plus the payment window): its units (stockHolds,
// keyed by the order ID), its points (pointHolds, keyed by holdID) and its coupon
// (couponHolds, keyed by the order ID). Each adapter below speaks hold.Holder over the
// leaf's native verbs, so the flows read the same for all three and ask one question of a
// refusal: errors.Is(err, hold.ErrGone), ErrPosted or ErrVoided.
var (
	_ hold.Holder[stockHold]  = stockHolds{}
	_ hold.Holder[pointsHold] = pointHolds{}
	_ hold.Holder[couponHold] = couponHolds{}
)

// stockHold is what a stock hold asks for: the units, and the buyer (for the inventory's
// buyer limits).
type stockHold struct {
	Buyer string
	Lines []inventory.Line
}

// stockHolds holds units: inventory Reserve / Commit / Release / Get; Return puts posted
// units back on sale. Whether it runs inside checkout's transaction is the stock step's
// decision (stock.go).
type stockHolds struct{ inv *inventory.Inventory }

func (h stockHolds) Hold(ctx context.Context, id string, st stockHold, ttl time.Duration) (hold.Info, error) {
	res, err := h.inv.Reserve(ctx, inventory.ReserveRequest{ID: id, BuyerID: st.Buyer, TTL: ttl, Lines: st.Lines})
	return reservationInfo(res), failed(err, "reserve stock of %s", id)
}

func (h stockHolds) Post(ctx context.Context, id string) error {
	return failed(h.inv.Commit(ctx, id), "commit stock of %s", id)
}

func (h stockHolds) Void(ctx context.Context, id string) error {
	return failed(h.inv.Release(ctx, id), "release stock of %s", id)
}

// Return puts the units of a posted hold back on sale, once however often it runs.
func (h stockHolds) Return(ctx context.Context, id string) error {
	return failed(h.inv.Return(ctx, id), "return stock of %s", id)
}

func (h stockHolds) Lookup(ctx context.Context, id string) (hold.Info, error) {
	res, err := h.inv.Get(ctx, id)
	return reservationInfo(res), err
}

func reservationInfo(res inventory.Reservation) hold.Info {
	info := hold.Info{ID: res.ID, State: stateOf(res.State, inventory.StateReserved, inventory.StateCommitted, inventory.StateReturned),
		Deadline: res.ExpiresAt}
	for _, l := range res.Lines {
		info.Amount += l.Qty
	}
	return info
}

// failed wraps err, if any, saying what failed.
func failed(err error, what string, args ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("commerce: "+what+": %w", append(args, err)...)
}

// stateOf maps a leaf's state onto the contract's: held, one of posted, or else voided
// (released, restored, expired).
func stateOf[S comparable](s, held S, posted ...S) hold.State {
	switch {
	case s == held:
		return hold.Held
	case slices.Contains(posted, s):
		return hold.Posted
	}
	return hold.Voided
}

// pointsHold is what a points hold asks for.
type pointsHold struct {
	User   string
	Amount int64
}

// pointHolds holds points: ledger Hold / CaptureAll / Void / LookupHold.
type pointHolds struct{ led *ledger.Ledger }

func (h pointHolds) Hold(ctx context.Context, id string, p pointsHold, ttl time.Duration) (hold.Info, error) {
	rc, err := h.led.Hold(ctx, id, p.User, p.Amount, ttl)
	return hold.Info{ID: id, State: hold.Held, Amount: rc.Amount, Deadline: rc.Time.Add(ttl)}, failed(err, "hold points %s", id)
}

func (h pointHolds) Post(ctx context.Context, id string) error {
	_, err := h.led.CaptureAll(ctx, id)
	return failed(err, "capture points hold %s", id)
}

func (h pointHolds) Void(ctx context.Context, id string) error {
	_, err := h.led.Void(ctx, id)
	return failed(err, "void points hold %s", id)
}

func (h pointHolds) Lookup(ctx context.Context, id string) (hold.Info, error) {
	l, err := h.led.LookupHold(ctx, id)
	return hold.Info{ID: l.ID, State: stateOf(l.State, ledger.HoldPending, ledger.HoldCaptured), Amount: l.Amount, Deadline: l.Deadline}, err
}

// couponHold is what a coupon hold asks for: the coupon, its owner, and the amount of the
// order it discounts.
type couponHold struct {
	CouponID, User string
	OrderAmount    int64
}

// couponHolds holds coupons: coupon Reserve (with a deadline) / Confirm / Release /
// Redemptions, keyed by the order ID; Return gives a confirmed coupon back (Restore).
// Info.Amount is the discount.
type couponHolds struct {
	coup *coupon.Service
	now  func() time.Time
}

func (h couponHolds) Hold(ctx context.Context, id string, c couponHold, ttl time.Duration) (hold.Info, error) {
	red, err := h.coup.Reserve(ctx, c.CouponID, c.User, id, c.OrderAmount, coupon.HoldUntil(h.now().Add(ttl)))
	return redemptionInfo(red), failed(err, "reserve coupon %s", c.CouponID)
}

func (h couponHolds) Post(ctx context.Context, id string) error {
	_, err := h.coup.Confirm(ctx, id)
	return failed(err, "confirm coupon of %s", id)
}

// PostCoupon is Post for an order that holds the one coupon couponID (as checkout's
// orders do): the same, without reading the reservation while it is held
// (coupon.Service.ConfirmCoupon).
func (h couponHolds) PostCoupon(ctx context.Context, id, couponID string) error {
	return failed(h.coup.ConfirmCoupon(ctx, id, couponID), "confirm coupon of %s", id)
}

func (h couponHolds) Void(ctx context.Context, id string) error {
	_, err := h.coup.Release(ctx, id)
	return failed(err, "restore coupon of %s", id)
}

// Return gives the coupon of a posted hold back (a paid order cancelled).
func (h couponHolds) Return(ctx context.Context, id string) error {
	_, err := h.coup.Restore(ctx, id)
	return failed(err, "restore coupon of %s", id)
}

func (h couponHolds) Lookup(ctx context.Context, id string) (hold.Info, error) {
	reds, err := h.coup.Redemptions(ctx, id)
	switch {
	case err != nil:
		return hold.Info{}, err
	case len(reds) == 0:
		return hold.Info{}, fmt.Errorf("%w: %s", coupon.ErrRedemptionNotFound, id)
	}
	return redemptionInfo(reds[0]), nil
}

func redemptionInfo(red coupon.Redemption) hold.Info {
	state := stateOf(red.State, coupon.RedemptionReserved, coupon.RedemptionConfirmed)
	return hold.Info{ID: red.OrderID, State: state, Amount: red.Discount, Deadline: red.HoldDeadline}
}

// points and coupons are the SQL holders through db (checkout's transaction, or the
// database); the stock holder goes through the stock step (stock.go).
func (s *Service) points(db bun.IDB) pointHolds { return pointHolds{led: s.led.WithTx(db)} }

func (s *Service) coupons(db bun.IDB) couponHolds {
	return couponHolds{coup: s.coup.WithTx(db), now: s.now}
}

// holdTTL is how long an order's holds last: until its expiry plus the payment window, so
// that a payment started just before expiry can still complete.
func (s *Service) holdTTL() time.Duration { return s.cfg.expiry + s.cfg.payWindow }

// giveBack voids, in tx, what the unpaid order next holds: its coupon, its points and (in
// SQL, or recorded as step "release" for after the commit) its units, recording in
// next.Stock what became of them. A hold already voided or expired needs nothing more.
func (s *Service) giveBack(ctx context.Context, tx bun.Tx, next *orderRow) error {
	if next.CouponID != "" {
		if err := s.coupons(tx).Void(ctx, next.ID); err != nil && !errors.Is(err, hold.ErrGone) {
			return err
		}
	}
	if next.Points > 0 {
		if err := s.points(tx).Void(ctx, holdID(next.ID)); err != nil && !errors.Is(err, hold.ErrVoided) {
			return err
		}
	}
	return s.stock.within(ctx, tx, releaseOp(next))
}
