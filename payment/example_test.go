package payment_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/payment/resilient"
	"github.com/commercekit/commercekit/sqlitedb"
)

// openExampleDB opens an in-memory SQLite database with the payment schema.
func openExampleDB(ctx context.Context, name string) (*bun.DB, error) {
	db, err := sqlitedb.Open("file:" + name + "?mode=memory&cache=shared")
	if err != nil {
		return nil, err
	}
	if err := payment.CreateSchema(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// openExample returns a Service on a fresh in-memory database (see openExampleDB) charging
// through the simulator, and a function closing both.
func openExample(ctx context.Context, name string) (*bun.DB, *pgsim.Simulator, *payment.Service, func(), error) {
	db, err := openExampleDB(ctx, name)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	sim, err := pgsim.New()
	if err != nil {
		db.Close()
		return nil, nil, nil, nil, err
	}
	closeAll := func() { sim.Close(); db.Close() }
	svc, err := payment.New(db, sim, payment.WithWebhookVerifier(sim.WebhookVerifier()))
	if err != nil {
		closeAll()
		return nil, nil, nil, nil, err
	}
	return db, sim, svc, closeAll, nil
}

// A composite plan (points + card) is validated, its card part charged through the simulator
// behind the resilience policies, a decline recorded, and part of the payment refunded.
func Example() {
	ctx := context.Background()
	db, err := openExampleDB(ctx, "example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	sim, err := pgsim.New()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sim.Close()
	gw, err := resilient.Wrap(sim, resilient.WithAttemptTimeout(5*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	svc, err := payment.New(db, gw)
	if err != nil {
		fmt.Println(err)
		return
	}

	plan := payment.Plan{OrderAmount: 30_000, Currency: "KRW", PointBalance: 8_000, Parts: []payment.Part{
		{Method: payment.MethodPoint, Amount: 5_000},
		{Method: payment.MethodCard, Amount: 25_000},
	}}
	if err := plan.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	card, _ := plan.GatewayPart()
	p, err := svc.Pay(ctx, payment.PayRequest{PaymentID: "pay-1", OrderID: "order-1", Amount: card.Amount,
		Currency: plan.Currency, Method: card.Method, Token: "tok_visa"})
	fmt.Println(p.State, err)

	declined, err := svc.Pay(ctx, payment.PayRequest{PaymentID: "pay-2", OrderID: "order-2", Amount: 9_000,
		Currency: "KRW", Method: payment.MethodCard, Token: pgsim.TokenDecline})
	fmt.Println(declined.State, errors.Is(err, payment.ErrDeclined))

	r, err := svc.Refund(ctx, payment.RefundRequest{RefundID: "refund-1", PaymentID: "pay-1", Amount: 5_000})
	if err != nil {
		fmt.Println(err)
		return
	}
	p, _ = svc.Get(ctx, "pay-1")
	fmt.Println(r.State, p.State, p.Refunded, p.Refundable())
	fmt.Println("charges:", sim.Stats().Charges)
	// Output:
	// APPROVED <nil>
	// DECLINED true
	// SUCCEEDED PARTIALLY_REFUNDED 5000 20000
	// charges: 1
}

// The PG charges but its answer is lost: the payment is UNKNOWN until the reconciler asks the
// PG, which says it approved it. It was charged once.
func ExampleReconciler() {
	ctx := context.Background()
	_, sim, svc, closeAll, err := openExample(ctx, "example-reconciler")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer closeAll()

	sim.InjectFault("pay-1", pgsim.FaultLostResponse, 1)
	p, err := svc.Pay(ctx, payment.PayRequest{PaymentID: "pay-1", OrderID: "order-1", Amount: 12_000,
		Currency: "KRW", Method: payment.MethodCard})
	fmt.Println(p.State, errors.Is(err, payment.ErrOutcomeUnknown))

	rec, err := payment.NewReconciler(svc, payment.WithThreshold(0))
	if err != nil {
		panic(err)
	}
	report, err := rec.Reconcile(ctx)
	fmt.Printf("%+v %v\n", report, err)
	p, _ = svc.Get(ctx, "pay-1")
	fmt.Println(p.State, "charges:", sim.Charges("pay-1"))
	// Output:
	// UNKNOWN true
	// {Examined:1 Settled:1 Unsettled:0} <nil>
	// APPROVED charges: 1
}

// The PG declines a card, then overturns its decline and takes the money; its webhook,
// confirmed with it, contradicts the record, and the payment goes to REVIEW. The person in
// charge gives back what the PG holds: it is refunded through the PG, once.
func ExampleService_ResolveReview() {
	ctx := context.Background()
	_, sim, svc, closeAll, err := openExample(ctx, "example-review")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer closeAll()

	_, err = svc.Pay(ctx, payment.PayRequest{PaymentID: "pay-1", OrderID: "order-1", Amount: 12_000,
		Currency: "KRW", Method: payment.MethodCard, Token: pgsim.TokenDecline})
	fmt.Println(errors.Is(err, payment.ErrDeclined))
	_ = sim.Overturn("pay-1") // declined, then charged after all
	body, sig, _ := sim.Webhook("pay-1")
	_ = svc.HandleWebhook(ctx, body, sig)
	p, _ := svc.Get(ctx, "pay-1")
	fmt.Println(p.State)

	p, err = svc.ResolveReview(ctx, "pay-1")
	st, _ := sim.Status(ctx, "pay-1")
	fmt.Println(p.State, p.Refunded, err, "refunded at the PG:", st.Canceled)
	// Output:
	// true
	// REVIEW
	// REFUNDED 12000 <nil> refunded at the PG: 12000
}

func ExamplePlan_Validate() {
	plan := payment.Plan{OrderAmount: 50_000, Currency: "KRW", Parts: []payment.Part{
		{Method: payment.MethodBNPL, Amount: 45_000},
		{Method: payment.MethodCoupon, Amount: 5_000},
	}}
	err := plan.Validate()
	fmt.Println(errors.Is(err, payment.ErrBNPLCombined))
	fmt.Println(err)
	// Output:
	// true
	// payment: BNPL cannot be combined with other methods
}

// A caller records the payment in its own transaction, with its own work (here, nothing
// else), and charges it after the commit. A payment whose transaction rolled back is not on
// record, and Submit never sends it to the PG.
func ExampleService_Submit() {
	ctx := context.Background()
	db, sim, svc, closeAll, err := openExample(ctx, "example-submit")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer closeAll()
	req := func(id string) payment.PayRequest {
		return payment.PayRequest{PaymentID: id, OrderID: "order-" + id, Amount: 12_000, Currency: "KRW", Method: payment.MethodCard}
	}

	errAbandoned := errors.New("the order could not move to PAYING")
	err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := svc.Request(ctx, tx, req("pay-1")); err != nil {
			return err
		}
		return errAbandoned // the caller's own work failed: everything rolls back
	})
	_, submitErr := svc.Submit(ctx, req("pay-1"))
	fmt.Println(errors.Is(err, errAbandoned), errors.Is(submitErr, payment.ErrPaymentNotFound))

	err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		_, err := svc.Request(ctx, tx, req("pay-2")) // ... with the caller's own writes in tx
		return err
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := svc.Submit(ctx, req("pay-2"))
	fmt.Println(p.State, err)
	fmt.Println("charges:", sim.Stats().Charges)
	// Output:
	// true true
	// APPROVED <nil>
	// charges: 1
}
