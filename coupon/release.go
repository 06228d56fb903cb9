package coupon

import (
	"context"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/hold"
)

// ErrRedemptionConfirmed: Release of an order whose coupon was already confirmed (used);
// Restore gives a confirmed coupon back. It matches hold.ErrPosted.
var ErrRedemptionConfirmed = errcode.New(errcode.Conflict, "coupon_redemption_confirmed", "coupon: redemption already confirmed", hold.ErrPosted)

// Release is the void of the two-phase contract (package hold): it gives back the coupons
// the order reserved and did not confirm, as Restore does, but fails, changing nothing, with
// a *RedeemError matching ErrRedemptionConfirmed when one was confirmed. Releasing a
// restored or expired redemption changes nothing; ErrRedemptionNotFound when the order
// reserved nothing. Through WithTx(tx) it joins the caller's transaction.
func (s *Service) Release(ctx context.Context, orderID string) ([]Redemption, error) {
	return s.restore(ctx, orderID, false)
}
