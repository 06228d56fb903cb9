package coupon

// Discount returns what coupon c takes off an order of orderAmount minor units.
//
// The result is never negative and never more than orderAmount. A FixedAmount coupon takes
// its Amount (at most the whole order); a PercentOff coupon takes Percent percent rounded
// down to the minor unit (10% of 1,999 is 199), then capped at MaxDiscount when that is set.
// An order below MinOrderAmount (or a non-positive amount) gets 0: the coupon does not apply.
//
// Discount does not look at the coupon's state or dates; Reserve does. A discount can equal
// the whole order; whether a coupon may pay an order alone is the checkout's rule.
func Discount(c Coupon, orderAmount int64) int64 {
	return c.Terms.Discount(orderAmount)
}

// Discount returns what these terms take off an order of orderAmount; see the package-level
// Discount.
func (t Terms) Discount(orderAmount int64) int64 {
	if orderAmount <= 0 || orderAmount < t.MinOrderAmount {
		return 0
	}
	var d int64
	switch t.Kind {
	case FixedAmount:
		d = t.Amount
	case PercentOff:
		// floor(orderAmount·p/100) without overflow: with orderAmount = 100q + r,
		// it is q·p + floor(r·p/100), and q·p ≤ orderAmount since p ≤ 100.
		q, r := orderAmount/100, orderAmount%100
		d = q*t.Percent + r*t.Percent/100
		if t.MaxDiscount > 0 {
			d = min(d, t.MaxDiscount)
		}
	}
	return max(0, min(d, orderAmount))
}
