package pgsim_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"

	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// The simulator served over HTTP, reached through Client as a real PG's adapter would be:
// an approval whose answer is lost charges once however often it is asked again under the
// same payment ID, and a declining card token is declined with its code.
func Example() {
	ctx := context.Background()
	sim, err := pgsim.New()
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(pgsim.NewHandler(sim)) // loopback only
	defer srv.Close()
	var gw payment.Gateway
	if gw, err = pgsim.NewClient(srv.URL); err != nil {
		panic(err)
	}

	req := payment.ApproveRequest{PaymentID: "pay-1", OrderID: "order-1", Amount: 27_000, Currency: "KRW",
		Method: payment.MethodCard, Token: "tok_visa"}
	sim.InjectFault(req.PaymentID, pgsim.FaultLostResponse, 1) // charged, then the answer is lost
	_, err = gw.Approve(ctx, req)
	fmt.Println("first call, outcome unknown:", errors.Is(err, payment.ErrOutcomeUnknown))
	_, err = gw.Approve(ctx, req) // the same payment ID: the first answer, no second charge
	fmt.Println("asked again:", err, "- charges:", sim.Charges(req.PaymentID))

	req.PaymentID, req.Token = "pay-2", pgsim.TokenDecline
	_, err = gw.Approve(ctx, req)
	var declined *payment.DeclineError
	fmt.Println("declined:", errors.As(err, &declined), declined.Code)
	// Output:
	// first call, outcome unknown: true
	// asked again: <nil> - charges: 1
	// declined: true CARD_DECLINED
}
