package payment

import (
	"errors"
	"fmt"
)

// BNPLMinimumKRW is the smallest amount BNPL pays, in won.
const BNPLMinimumKRW = 10_000

// Sentinel errors of the method rules; a *PlanError matches one of them.
var (
	// ErrPlanEmpty: the plan has no parts.
	ErrPlanEmpty = errors.New("payment: plan has no parts")
	// ErrPlanInvalidPart: a part has an unknown method, a non-positive amount, or repeats a method.
	ErrPlanInvalidPart = errors.New("payment: invalid plan part")
	// ErrPlanSum: the parts do not add up to the order amount.
	ErrPlanSum = errors.New("payment: plan parts do not add up to the order amount")
	// ErrCouponAlone: a coupon never pays an order alone.
	ErrCouponAlone = errors.New("payment: a coupon cannot pay alone")
	// ErrBNPLCombined: BNPL never combines with another method.
	ErrBNPLCombined = errors.New("payment: BNPL cannot be combined with other methods")
	// ErrBNPLMinimum: BNPL needs at least BNPLMinimumKRW (and is offered in KRW only).
	ErrBNPLMinimum = errors.New("payment: amount below the BNPL minimum")
	// ErrCompositeWithoutCard: a plan of several methods needs CARD as its main method.
	ErrCompositeWithoutCard = errors.New("payment: a composite payment needs CARD as its main method")
	// ErrPointsExceedBalance: the plan spends more points than the customer has.
	ErrPointsExceedBalance = errors.New("payment: points exceed the balance")
)

// PlanError says which method rule a Plan breaks. It matches its Rule (one of the sentinels
// above) with errors.Is.
type PlanError struct {
	Rule   error
	Method Method
	Detail string
}

// Error names the rule and the detail.
func (e *PlanError) Error() string {
	if e.Detail == "" {
		return e.Rule.Error()
	}
	return e.Rule.Error() + ": " + e.Detail
}

// Unwrap returns the rule.
func (e *PlanError) Unwrap() error { return e.Rule }

// Part is what one method pays of an order.
type Part struct {
	Method Method
	Amount int64
}

// Plan is how an order is to be paid: one part per method (seed 004's composite payments:
// a PG method plus points and a coupon). Validate checks the method rules; it touches
// nothing, so checkout can run it before holding anything.
type Plan struct {
	// OrderAmount is what the order costs, in minor units of Currency.
	OrderAmount int64
	Currency    string
	// PointBalance is the customer's point balance, as the caller read it.
	PointBalance int64
	Parts        []Part
}

// Validate checks the plan against the method rules and returns a *PlanError for the first
// rule it breaks (or a *ValidationError for a bad currency or order amount):
//   - every part has a known method, used once, and a positive amount;
//   - the parts add up to the order amount;
//   - a coupon never pays alone;
//   - BNPL never combines with anything and needs at least 10,000 KRW;
//   - a plan of several methods needs CARD as its main (PG) method;
//   - points are spent only within the balance.
func (p Plan) Validate() error {
	if !validCurrency(p.Currency) {
		return invalid("Currency", "must be three upper-case letters (ISO 4217)")
	}
	if p.OrderAmount <= 0 {
		return invalid("OrderAmount", "must be positive")
	}
	if len(p.Parts) == 0 {
		return &PlanError{Rule: ErrPlanEmpty}
	}
	seen := make(map[Method]int64, len(p.Parts))
	var sum int64
	over := false
	for _, part := range p.Parts {
		switch {
		case !part.Method.Valid():
			return &PlanError{Rule: ErrPlanInvalidPart, Method: part.Method, Detail: "unknown method"}
		case part.Amount <= 0:
			return &PlanError{Rule: ErrPlanInvalidPart, Method: part.Method, Detail: "amount must be positive"}
		}
		if _, dup := seen[part.Method]; dup {
			return &PlanError{Rule: ErrPlanInvalidPart, Method: part.Method, Detail: "method used twice"}
		}
		seen[part.Method] = part.Amount
		if part.Amount > p.OrderAmount-sum { // compared so, the sum cannot overflow
			over = true
		} else {
			sum += part.Amount
		}
	}
	if over {
		return &PlanError{Rule: ErrPlanSum, Detail: fmt.Sprintf("parts add up to more than the order's %d", p.OrderAmount)}
	}
	if sum != p.OrderAmount {
		return &PlanError{Rule: ErrPlanSum, Detail: fmt.Sprintf("parts add up to %d, the order is %d", sum, p.OrderAmount)}
	}
	if _, ok := seen[MethodCoupon]; ok && len(seen) == 1 {
		return &PlanError{Rule: ErrCouponAlone, Method: MethodCoupon}
	}
	if amount, ok := seen[MethodBNPL]; ok {
		if len(seen) > 1 {
			return &PlanError{Rule: ErrBNPLCombined, Method: MethodBNPL}
		}
		if p.Currency != "KRW" {
			return &PlanError{Rule: ErrBNPLMinimum, Method: MethodBNPL, Detail: "BNPL is offered in KRW only, not " + p.Currency}
		}
		if amount < BNPLMinimumKRW {
			return &PlanError{Rule: ErrBNPLMinimum, Method: MethodBNPL, Detail: fmt.Sprintf("%d KRW is below %d KRW", amount, BNPLMinimumKRW)}
		}
	}
	if _, ok := seen[MethodCard]; len(seen) > 1 && !ok {
		return &PlanError{Rule: ErrCompositeWithoutCard}
	}
	if points, ok := seen[MethodPoint]; ok && points > p.PointBalance {
		return &PlanError{Rule: ErrPointsExceedBalance, Method: MethodPoint,
			Detail: fmt.Sprintf("%d points spent, %d held", points, p.PointBalance)}
	}
	return nil
}

// Amount returns what the plan pays with method m (0 if m is not in it).
func (p Plan) Amount(m Method) int64 {
	var n int64
	for _, part := range p.Parts {
		if part.Method == m {
			n += part.Amount
		}
	}
	return n
}

// GatewayPart returns the part paid through the PG (CARD or BNPL), if any: the one to Pay.
func (p Plan) GatewayPart() (Part, bool) {
	for _, part := range p.Parts {
		if part.Method.ViaGateway() {
			return part, true
		}
	}
	return Part{}, false
}
