package commerce

import (
	"context"
	"fmt"
)

// gatewayPayments cross-checks every settled payment with the PG's own record
// (payment.Service.CrossCheck) and reports each contradiction, and each payment under review,
// as a "payment.gateway" discrepancy of its order or top-up. The PG unreachable makes the
// audit fail rather than pass unchecked.
func (a *audit) gatewayPayments(ctx context.Context) error {
	mismatches, err := a.s.pay.CrossCheck(ctx)
	if err != nil {
		return fmt.Errorf("commerce: audit: cross-check payments with the gateway: %w", err)
	}
	for _, m := range mismatches {
		p := m.Payment
		a.add("payment.gateway", p.OrderID, "payment %s (%s, %d %s): %s", p.ID, p.State, p.Amount, p.Currency, m.Detail)
	}
	return nil
}
