package coupon_test

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/commercekit/commercekit/coupon"
)

func TestDiscount(t *testing.T) {
	fixed := func(amount, minOrder int64) coupon.Terms {
		return coupon.Terms{Kind: coupon.FixedAmount, Amount: amount, MinOrderAmount: minOrder}
	}
	percent := func(p, maxDiscount int64) coupon.Terms {
		return coupon.Terms{Kind: coupon.PercentOff, Percent: p, MaxDiscount: maxDiscount}
	}
	cases := []struct {
		name   string
		terms  coupon.Terms
		amount int64
		want   int64
	}{
		{"fixed", fixed(3000, 0), 10_000, 3000},
		{"fixed, never more than the order", fixed(3000, 0), 2000, 2000},
		{"fixed, the whole order", fixed(3000, 0), 3000, 3000},
		{"zero order", fixed(3000, 0), 0, 0},
		{"negative order", fixed(3000, 0), -100, 0},
		{"below the minimum", fixed(3000, 10_000), 9_999, 0},
		{"at the minimum", fixed(3000, 10_000), 10_000, 3000},
		{"percent rounds down", percent(10, 0), 31_999, 3_199},
		{"percent of a tiny order", percent(15, 0), 6, 0},
		{"percent, 100%", percent(100, 0), 12_345, 12_345},
		{"percent, capped", percent(10, 5000), 80_000, 5000},
		{"percent, under the cap", percent(10, 5000), 49_999, 4_999},
		{"percent of the largest order", percent(99, 0), math.MaxInt64, 9_131_138_316_486_228_048},
		{"fixed, the largest amounts", fixed(math.MaxInt64, 0), math.MaxInt64, math.MaxInt64},
		{"unknown kind", coupon.Terms{Kind: "bogo", Amount: 5}, 100, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.terms.Discount(tc.amount))
			assert.Equal(t, tc.want, coupon.Discount(coupon.Coupon{Terms: tc.terms}, tc.amount))
		})
	}
}

// TestPercentDiscountIsFloor checks the overflow-free formula against exact arithmetic.
func TestPercentDiscountIsFloor(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		amount := r.Int64()
		if r.IntN(2) == 0 {
			amount = r.Int64N(1_000_000)
		}
		p := 1 + r.Int64N(100)
		want := new(big.Int).Mul(big.NewInt(amount), big.NewInt(p))
		want.Quo(want, big.NewInt(100))
		got := coupon.Terms{Kind: coupon.PercentOff, Percent: p}.Discount(amount)
		if got != want.Int64() || got < 0 || got > amount {
			t.Fatalf("%d%% of %d: got %d, want %s", p, amount, got, want)
		}
	}
}
