package server

import (
	"context"
	"errors"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/coupon"
)

// Demo catalogue: created at start when COMMERCEKIT_SEED_DEMO is on. Creating is
// idempotent, and an entry changed since (a price updated by an admin) is left as it is.
var (
	demoProducts = []commerce.NewProduct{
		{ID: "kbd-001", Name: "Mechanical keyboard", Price: 129_000, Stock: 100},
		{ID: "mouse-001", Name: "Wireless mouse", Price: 39_000, Stock: 200},
		{ID: "sneakers-limited", Name: "Limited sneakers (flash sale, one per customer)", Price: 199_000, Stock: 10, BuyerLimit: 1},
	}
	demoCoupons = []coupon.Template{
		{ID: "welcome-5000", Name: "Welcome: 5,000 won off orders of 50,000 won or more",
			Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 5_000, MinOrderAmount: 50_000}, PerUserLimit: 1},
	}
)

// seed creates the demo catalogue.
func (s *Server) seed(ctx context.Context) error {
	for _, p := range demoProducts {
		if _, err := s.svc.CreateProduct(ctx, p); err != nil && !errors.Is(err, commerce.ErrIdempotencyConflict) {
			return err
		}
	}
	for _, t := range demoCoupons {
		if _, err := s.svc.CreateCouponTemplate(ctx, t); err != nil && !errors.Is(err, coupon.ErrTemplateExists) {
			return err
		}
	}
	return nil
}
