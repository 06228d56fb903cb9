package payment_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/observe"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// eachDB runs fn on MySQL and on SQLite, each with the schema created.
func eachDB(t *testing.T, fn func(t *testing.T, db *bun.DB)) {
	t.Helper()
	testenv.EachDB(t, func(t *testing.T, db *bun.DB) {
		require.NoError(t, payment.CreateSchema(context.Background(), db))
		fn(t, db)
	})
}

// recorder keeps everything the Service tells its Observer.
type recorder struct{ observe.Recorder }

// contradicted returns the contradictions observed, as "payment:cause:detail".
func (r *recorder) contradicted() []string {
	var out []string
	for _, e := range r.Events("contradiction") {
		out = append(out, e.Labels["payment_id"]+":"+e.Labels["cause"]+":"+e.Labels["detail"])
	}
	return out
}

// count returns how many transitions of the payment into state to were observed.
func (r *recorder) count(paymentID string, to payment.State) int {
	return r.Count("transition", map[string]string{"payment_id": paymentID, "to": string(to)})
}

// env is a Service on a database with a simulator behind it.
type env struct {
	db    *bun.DB
	sim   *pgsim.Simulator
	svc   *payment.Service
	clock *testclock.Clock
	obs   *recorder
}

// newEnv builds an env whose Service talks to the simulator through gw(sim) (nil: directly).
func newEnv(t *testing.T, db *bun.DB, gw func(*pgsim.Simulator) payment.Gateway, simOpts ...pgsim.Option) *env {
	t.Helper()
	sim := testkit.Must(pgsim.New(simOpts...))(t)
	t.Cleanup(sim.Close)
	var g payment.Gateway = sim
	if gw != nil {
		g = gw(sim)
	}
	e := &env{db: db, sim: sim, clock: testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)), obs: &recorder{}}
	svc, err := payment.New(db, g, payment.WithClock(e.clock.Now), payment.WithObserver(e.obs),
		payment.WithWebhookVerifier(sim.WebhookVerifier()))
	require.NoError(t, err)
	e.svc = svc
	return e
}

// card is a card payment request of amount KRW that the simulator approves.
func card(id string, amount int64) payment.PayRequest {
	return payment.PayRequest{PaymentID: id, OrderID: "order-" + id, Amount: amount, Currency: "KRW",
		Method: payment.MethodCard, Token: "tok_visa"}
}

// states returns the sequence of (from, to, cause) of a payment's persisted transitions.
func (e *env) history(t *testing.T, id string) []string {
	t.Helper()
	ts, err := e.svc.Transitions(context.Background(), id)
	require.NoError(t, err)
	out := make([]string, len(ts))
	for i, tr := range ts {
		out[i] = string(tr.From) + ">" + string(tr.To) + ":" + string(tr.Cause)
	}
	return out
}

// get reads a payment, failing the test if it cannot.
func (e *env) get(t *testing.T, id string) payment.Payment {
	t.Helper()
	return testkit.Must(e.svc.Get(context.Background(), id))(t)
}

// requireRefundHeld checks that refund r is left PENDING with pending reserved on its
// payment, which stays APPROVED with nothing recorded as refunded.
func (e *env) requireRefundHeld(t *testing.T, r payment.Refund, pending int64) {
	t.Helper()
	assert.Equal(t, payment.RefundPending, r.State)
	p := e.get(t, r.PaymentID)
	assert.Equal(t, payment.StateApproved, p.State)
	assert.Zero(t, p.Refunded)
	assert.Equal(t, pending, p.RefundPending)
}

// payApprovedAndDeclined pays approved (approved by the PG) and declined (a card the PG
// declines), 5,000 won each.
func (e *env) payApprovedAndDeclined(t *testing.T, approved, declined string) {
	t.Helper()
	ctx := context.Background()
	_, err := e.svc.Pay(ctx, card(approved, 5000))
	require.NoError(t, err)
	req := card(declined, 5000)
	req.Token = pgsim.TokenDecline
	_, err = e.svc.Pay(ctx, req)
	require.ErrorIs(t, err, payment.ErrDeclined)
}

// crossCheck returns what CrossCheck reports, each payment's detail by its ID.
func (e *env) crossCheck(t *testing.T) map[string]string {
	t.Helper()
	mismatches, err := e.svc.CrossCheck(context.Background())
	require.NoError(t, err)
	got := map[string]string{}
	for _, m := range mismatches {
		got[m.Payment.ID] = m.Detail
	}
	return got
}

// breakerDelay is how long an open breaker waits before a trial call in tests. failsafe-go's
// breaker clock cannot be injected, so the delay is real: long enough that a loaded CI machine
// reaches the next call before it passes, short enough for the tests that wait it out.
const breakerDelay = 300 * time.Millisecond

// deliverWebhook has the simulator send its webhook for a payment and handles it.
func (e *env) deliverWebhook(t *testing.T, id string) {
	t.Helper()
	body, sig := e.webhook(t, id)
	require.NoError(t, e.svc.HandleWebhook(context.Background(), body, sig))
}

// webhook returns the simulator's signed webhook for payment id, as the PG would send it.
func (e *env) webhook(t *testing.T, id string) (body []byte, sig string) {
	t.Helper()
	body, sig, err := e.sim.Webhook(id)
	require.NoError(t, err)
	return body, sig
}

// raceLate makes call(0), whose answer is lost, and call(1), which the PG never sees (their
// idempotency keys are lost and unseen), lets the PG's key retention pass, then repeats them
// sixteen times at once alongside a reconciler pass: each repeat must succeed.
func (e *env) raceLate(t *testing.T, lost, unseen string, call func(i int) error) {
	t.Helper()
	e.sim.InjectFault(lost, pgsim.FaultLostResponse, 1)
	e.sim.InjectFault(unseen, pgsim.FaultUnavailable, 1)
	require.Error(t, call(0))
	require.Error(t, call(1))
	e.clock.Advance(pgKeyRetention + time.Hour)

	rec := testkit.Must(payment.NewReconciler(e.svc, payment.WithConcurrency(2)))(t)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() { assert.NoError(t, call(i%2)) })
	}
	wg.Go(func() {
		_, err := rec.Reconcile(context.Background())
		assert.NoError(t, err)
	})
	wg.Wait()
}
