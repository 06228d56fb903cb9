package resilient_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/payment/resilient"
)

// A PG that refuses one call is retried under the same payment ID and charges once; a PG
// that is down opens the breaker, and Ready then answers "retry later" without a call.
func Example() {
	ctx := context.Background()
	sim, err := pgsim.New()
	if err != nil {
		panic(err)
	}
	gw, err := resilient.Wrap(sim,
		resilient.WithRetries(3, time.Millisecond, 2*time.Millisecond),
		resilient.WithBreaker(2, 2, time.Minute))
	if err != nil {
		panic(err)
	}

	req := payment.ApproveRequest{PaymentID: "pay-1", OrderID: "order-1", Amount: 27_000, Currency: "KRW",
		Method: payment.MethodCard, Token: "tok_visa"}
	sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1) // one 503, before processing
	_, err = gw.Approve(ctx, req)
	fmt.Println("approved:", err == nil, "- calls:", sim.ApproveCalls(req.PaymentID), "charges:", sim.Charges(req.PaymentID))

	sim.SetFault(pgsim.FaultUnavailable) // the PG is down
	req.PaymentID = "pay-2"
	_, err = gw.Approve(ctx, req)
	fmt.Println("down:", errors.Is(err, payment.ErrGatewayUnavailable), "- breaker:", gw.BreakerState())
	err = gw.Ready()
	wait := errcode.RetryAfter(err, 0)
	fmt.Println("ready:", errors.Is(err, resilient.ErrBreakerOpen), "- retry after the breaker's delay:", wait > 0 && wait <= time.Minute)
	// Output:
	// approved: true - calls: 2 charges: 1
	// down: true - breaker: open
	// ready: true - retry after the breaker's delay: true
}
