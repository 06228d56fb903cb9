package payment_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/payment"
)

func TestStateMachine(t *testing.T) {
	all := []payment.State{payment.StateRequested, payment.StateApproved, payment.StateDeclined,
		payment.StateUnknown, payment.StateAbandoned, payment.StatePartiallyRefunded, payment.StateRefunded}
	legal := map[[2]payment.State]bool{
		{payment.StateRequested, payment.StateApproved}:         true,
		{payment.StateRequested, payment.StateDeclined}:         true,
		{payment.StateRequested, payment.StateUnknown}:          true,
		{payment.StateUnknown, payment.StateApproved}:           true,
		{payment.StateUnknown, payment.StateDeclined}:           true,
		{payment.StateRequested, payment.StateAbandoned}:        true,
		{payment.StateAbandoned, payment.StateApproved}:         true,
		{payment.StateAbandoned, payment.StateDeclined}:         true,
		{payment.StateApproved, payment.StatePartiallyRefunded}: true,
		{payment.StateApproved, payment.StateRefunded}:          true,
		{payment.StatePartiallyRefunded, payment.StateRefunded}: true,
	}
	for _, from := range all {
		assert.True(t, from.Valid())
		assert.True(t, from.Reaches(from))
		for _, to := range all {
			assert.Equal(t, legal[[2]payment.State{from, to}], from.CanTransitionTo(to), "%s -> %s", from, to)
		}
	}
	assert.False(t, payment.State("LOST").Valid())
	assert.True(t, payment.StateRequested.Reaches(payment.StateRefunded))
	assert.True(t, payment.StateUnknown.Reaches(payment.StateDeclined))
	assert.False(t, payment.StateDeclined.Reaches(payment.StateApproved))
	assert.False(t, payment.StateApproved.Reaches(payment.StateUnknown))
	for _, s := range all {
		assert.Equal(t, s != payment.StateRequested && s != payment.StateUnknown, s.Settled(), s)
	}
}

func TestPlanRules(t *testing.T) {
	part := func(m payment.Method, amount int64) payment.Part { return payment.Part{Method: m, Amount: amount} }
	card, point, coupon, bnpl := payment.MethodCard, payment.MethodPoint, payment.MethodCoupon, payment.MethodBNPL
	for _, tc := range []struct {
		name    string
		total   int64
		balance int64
		parts   []payment.Part
		want    error
	}{
		{"card alone", 30_000, 0, []payment.Part{part(card, 30_000)}, nil},
		{"points alone", 30_000, 30_000, []payment.Part{part(point, 30_000)}, nil},
		{"BNPL alone", 10_000, 0, []payment.Part{part(bnpl, 10_000)}, nil},
		{"card, points and coupon", 30_000, 5000, []payment.Part{part(coupon, 3000), part(point, 5000), part(card, 22_000)}, nil},
		{"card and coupon", 30_000, 0, []payment.Part{part(card, 27_000), part(coupon, 3000)}, nil},
		{"no parts", 30_000, 0, nil, payment.ErrPlanEmpty},
		{"unknown method", 30_000, 0, []payment.Part{part("CASH", 30_000)}, payment.ErrPlanInvalidPart},
		{"zero part", 30_000, 0, []payment.Part{part(card, 30_000), part(coupon, 0)}, payment.ErrPlanInvalidPart},
		{"method twice", 30_000, 0, []payment.Part{part(card, 15_000), part(card, 15_000)}, payment.ErrPlanInvalidPart},
		{"sum short", 30_000, 0, []payment.Part{part(card, 29_999)}, payment.ErrPlanSum},
		{"sum over", 30_000, 10_000, []payment.Part{part(card, 25_000), part(point, 10_000)}, payment.ErrPlanSum},
		{"sum overflowing", 30_000, math.MaxInt64, []payment.Part{part(card, math.MaxInt64), part(point, math.MaxInt64)}, payment.ErrPlanSum},
		{"coupon alone", 3000, 0, []payment.Part{part(coupon, 3000)}, payment.ErrCouponAlone},
		{"BNPL with points", 30_000, 5000, []payment.Part{part(bnpl, 25_000), part(point, 5000)}, payment.ErrBNPLCombined},
		{"BNPL with card", 30_000, 0, []payment.Part{part(bnpl, 15_000), part(card, 15_000)}, payment.ErrBNPLCombined},
		{"BNPL below minimum", 9_999, 0, []payment.Part{part(bnpl, 9_999)}, payment.ErrBNPLMinimum},
		{"points and coupon without card", 30_000, 30_000, []payment.Part{part(point, 27_000), part(coupon, 3000)}, payment.ErrCompositeWithoutCard},
		{"points beyond balance", 30_000, 4999, []payment.Part{part(card, 25_000), part(point, 5000)}, payment.ErrPointsExceedBalance},
		{"points alone beyond balance", 30_000, 0, []payment.Part{part(point, 30_000)}, payment.ErrPointsExceedBalance},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := payment.Plan{OrderAmount: tc.total, Currency: "KRW", PointBalance: tc.balance, Parts: tc.parts}.Validate()
			if tc.want == nil {
				assert.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
			var pe *payment.PlanError
			assert.ErrorAs(t, err, &pe)
		})
	}

	t.Run("BNPL outside KRW", func(t *testing.T) {
		err := payment.Plan{OrderAmount: 100_00, Currency: "USD", Parts: []payment.Part{part(bnpl, 100_00)}}.Validate()
		assert.ErrorIs(t, err, payment.ErrBNPLMinimum)
	})
	t.Run("bad order", func(t *testing.T) {
		assert.ErrorIs(t, payment.Plan{OrderAmount: 0, Currency: "KRW", Parts: []payment.Part{part(card, 1)}}.Validate(), payment.ErrInvalidRequest)
		assert.ErrorIs(t, payment.Plan{OrderAmount: 1, Currency: "won", Parts: []payment.Part{part(card, 1)}}.Validate(), payment.ErrInvalidRequest)
	})
	t.Run("gateway part", func(t *testing.T) {
		p := payment.Plan{OrderAmount: 30_000, Currency: "KRW", PointBalance: 5000,
			Parts: []payment.Part{part(point, 5000), part(card, 25_000)}}
		g, ok := p.GatewayPart()
		assert.True(t, ok)
		assert.Equal(t, part(card, 25_000), g)
		assert.Equal(t, int64(5000), p.Amount(point))
		assert.Zero(t, p.Amount(coupon))
		_, ok = payment.Plan{Parts: []payment.Part{part(point, 1)}}.GatewayPart()
		assert.False(t, ok)
	})
}
