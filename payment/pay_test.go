package payment_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/payment/idempotency/redisidempotency"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/payment/resilient"
)

func TestPayApproved(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		p, err := e.svc.Pay(ctx, card("pay-1", 25_000))
		require.NoError(t, err)
		assert.Equal(t, payment.StateApproved, p.State)
		assert.NotEmpty(t, p.PGReference)
		assert.Equal(t, p, e.get(t, "pay-1"))
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}, e.history(t, "pay-1"))
		assert.Equal(t, 1, e.sim.Charges("pay-1"))

		// A repeated Pay returns the settled payment without asking the PG again.
		again, err := e.svc.Pay(ctx, card("pay-1", 25_000))
		require.NoError(t, err)
		assert.Equal(t, p, again)
		assert.Equal(t, 1, e.sim.ApproveCalls("pay-1"))

		list, err := e.svc.ByOrder(ctx, "order-pay-1")
		require.NoError(t, err)
		assert.Equal(t, []payment.Payment{p}, list)
		assert.Equal(t, 1, e.obs.count("pay-1", payment.StateApproved))
	})
}

func TestPayDeclined(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		req := card("pay-d", 10_000)
		req.Token = pgsim.TokenInsufficientFunds
		p, err := e.svc.Pay(ctx, req)
		var d *payment.DeclineError
		require.ErrorAs(t, err, &d)
		assert.ErrorIs(t, err, payment.ErrDeclined)
		assert.Equal(t, pgsim.CodeInsufficientFunds, d.Code)
		assert.Equal(t, payment.StateDeclined, p.State)
		assert.Equal(t, pgsim.CodeInsufficientFunds, p.DeclineCode)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>DECLINED:gateway"}, e.history(t, "pay-d"))

		_, err = e.svc.Pay(ctx, req)
		assert.ErrorIs(t, err, payment.ErrDeclined)
		assert.Equal(t, 1, e.sim.ApproveCalls("pay-d"), "a declined payment is not sent again")
		assert.Zero(t, e.sim.Stats().Charges)
	})
}

func TestPayRejectsBadRequestsAndReusedIDs(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		bad := card("pay-x", 0)
		_, err := e.svc.Pay(ctx, bad)
		var ve *payment.ValidationError
		require.ErrorAs(t, err, &ve)
		assert.Equal(t, "Amount", ve.Field)
		_, err = e.svc.Get(ctx, "pay-x")
		assert.ErrorIs(t, err, payment.ErrPaymentNotFound, "a bad request records nothing")

		_, err = e.svc.Pay(ctx, card("pay-1", 10_000))
		require.NoError(t, err)
		for _, change := range []func(*payment.PayRequest){
			func(r *payment.PayRequest) { r.Amount = 20_000 },
			func(r *payment.PayRequest) { r.OrderID = "other" },
			func(r *payment.PayRequest) { r.Token = "tok_other" },
			func(r *payment.PayRequest) { r.Method = payment.MethodBNPL },
		} {
			req := card("pay-1", 10_000)
			change(&req)
			_, err := e.svc.Pay(ctx, req)
			assert.ErrorIs(t, err, payment.ErrPaymentIDReused)
		}
		assert.Equal(t, int64(10_000), e.get(t, "pay-1").Amount)
		assert.Equal(t, 1, e.sim.Stats().ApproveCalls)

		// IDs compare byte for byte on both databases.
		_, err = e.svc.Pay(ctx, card("PAY-1", 3000))
		require.NoError(t, err)
		assert.Equal(t, int64(3000), e.get(t, "PAY-1").Amount)
		assert.Equal(t, int64(10_000), e.get(t, "pay-1").Amount)
		// MySQL's collations ignore trailing spaces ("pay-1 " = "pay-1"): such IDs are refused,
		// and never find the record of another ID.
		for _, id := range []string{"pay-1 ", "pay-2 "} {
			_, err = e.svc.Pay(ctx, card(id, 3000))
			require.ErrorAs(t, err, &ve, id)
			assert.Equal(t, "PaymentID", ve.Field)
			_, err = e.svc.Get(ctx, id)
			assert.ErrorIs(t, err, payment.ErrPaymentNotFound, id)
		}
		spaced := card("pay-3", 3000)
		spaced.OrderID = "order-pay-1 "
		_, err = e.svc.Pay(ctx, spaced)
		require.ErrorAs(t, err, &ve)
		assert.Equal(t, "OrderID", ve.Field)
		_, err = e.svc.Refund(ctx, payment.RefundRequest{RefundID: "r ", PaymentID: "pay-1", Amount: 1})
		require.ErrorAs(t, err, &ve)
		assert.Equal(t, "RefundID", ve.Field)
		// bun's MySQL dialect drops a NUL: the refund's retry would be taken for another.
		_, err = e.svc.Refund(ctx, payment.RefundRequest{RefundID: "r", PaymentID: "pay-1", Amount: 1, Reason: "asked\x00"})
		require.ErrorAs(t, err, &ve)
		assert.Equal(t, "Reason", ve.Field)
		_, err = e.svc.Refund(ctx, payment.RefundRequest{RefundID: "r", PaymentID: "pay-1", Amount: 1})
		require.NoError(t, err)
		_, err = e.svc.GetRefund(ctx, "r ")
		assert.ErrorIs(t, err, payment.ErrRefundNotFound)
		for _, q := range []func() (int, error){
			func() (int, error) { ps, err := e.svc.ByOrder(ctx, "order-pay-1 "); return len(ps), err },
			func() (int, error) { ts, err := e.svc.Transitions(ctx, "pay-1 "); return len(ts), err },
			func() (int, error) { rs, err := e.svc.Refunds(ctx, "pay-1 "); return len(rs), err },
		} {
			n, err := q()
			if err == nil {
				assert.Zero(t, n, "no record of another ID")
			} else {
				assert.ErrorIs(t, err, payment.ErrPaymentNotFound)
			}
		}
	})
}

func TestValidate(t *testing.T) {
	long := string(make([]byte, 65))
	for _, tc := range []struct {
		name  string
		req   payment.PayRequest
		field string
	}{
		{"empty payment ID", payment.PayRequest{OrderID: "o", Amount: 1, Currency: "KRW", Method: payment.MethodCard}, "PaymentID"},
		{"long payment ID", payment.PayRequest{PaymentID: long, OrderID: "o", Amount: 1, Currency: "KRW", Method: payment.MethodCard}, "PaymentID"},
		{"empty order ID", payment.PayRequest{PaymentID: "p", Amount: 1, Currency: "KRW", Method: payment.MethodCard}, "OrderID"},
		{"negative amount", payment.PayRequest{PaymentID: "p", OrderID: "o", Amount: -1, Currency: "KRW", Method: payment.MethodCard}, "Amount"},
		{"lower-case currency", payment.PayRequest{PaymentID: "p", OrderID: "o", Amount: 1, Currency: "krw", Method: payment.MethodCard}, "Currency"},
		{"points through the PG", payment.PayRequest{PaymentID: "p", OrderID: "o", Amount: 1, Currency: "KRW", Method: payment.MethodPoint}, "Method"},
		{"unknown method", payment.PayRequest{PaymentID: "p", OrderID: "o", Amount: 1, Currency: "KRW", Method: "CASH"}, "Method"},
		{"BNPL below its minimum", payment.PayRequest{PaymentID: "p", OrderID: "o", Amount: payment.BNPLMinimumKRW - 1, Currency: "KRW", Method: payment.MethodBNPL}, "Amount"},
		{"BNPL in another currency", payment.PayRequest{PaymentID: "p", OrderID: "o", Amount: payment.BNPLMinimumKRW, Currency: "USD", Method: payment.MethodBNPL}, "Currency"},
		{"NUL in the token", payment.PayRequest{PaymentID: "p", OrderID: "o", Amount: 1, Currency: "KRW", Method: payment.MethodCard, Token: "tok\x00"}, "Token"},
		{"token of 256 characters", payment.PayRequest{PaymentID: "p", OrderID: "o", Amount: 1, Currency: "KRW", Method: payment.MethodCard, Token: strings.Repeat("한", 256)}, "Token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ve *payment.ValidationError
			require.ErrorAs(t, tc.req.Validate(), &ve)
			assert.Equal(t, tc.field, ve.Field)
			assert.ErrorIs(t, ve, payment.ErrInvalidRequest)
		})
	}
	ok := payment.PayRequest{PaymentID: "p", OrderID: "o", Amount: 1, Currency: "KRW", Method: payment.MethodCard,
		Token: strings.Repeat("한", payment.MaxTokenLen)}
	assert.NoError(t, ok.Validate())
	ok.Method, ok.Amount = payment.MethodBNPL, payment.BNPLMinimumKRW
	assert.NoError(t, ok.Validate())
}

// recordChecker is a Gateway decorator that checks, when the PG is called, that the payment is
// already committed as REQUESTED (read through the database, outside any transaction).
type recordChecker struct {
	payment.Gateway
	t  *testing.T
	db *bun.DB
}

func (g recordChecker) Approve(ctx context.Context, req payment.ApproveRequest) (payment.Approval, error) {
	var state string
	err := g.db.NewSelect().Table("payment_payments").Column("state").Where("id = ?", req.PaymentID).Scan(ctx, &state)
	assert.NoError(g.t, err, "the payment must be committed before the PG is called")
	assert.Equal(g.t, "REQUESTED", state)
	return g.Gateway.Approve(ctx, req)
}

func TestPayRecordsBeforeCallingTheGateway(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		e := newEnv(t, db, func(s *pgsim.Simulator) payment.Gateway { return recordChecker{s, t, db} })
		_, err := e.svc.Pay(context.Background(), card("pay-1", 5000))
		require.NoError(t, err)
	})
}

// TestCrashBeforeGatewayCallIsRecovered: a payment recorded but never sent (the process died
// between the commit and the PG call, or the PG was unreachable) is REQUESTED; the reconciler
// finds the PG never saw it, submits it with the same ID, and it is charged once.
func TestCrashBeforeGatewayCallIsRecovered(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		e.sim.InjectFault("pay-1", pgsim.FaultUnavailable, 1)
		p, err := e.svc.Pay(ctx, card("pay-1", 5000))
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		assert.Equal(t, payment.StateRequested, p.State)

		r := testkit.Must(payment.NewReconciler(e.svc, payment.WithThreshold(time.Minute)))(t)
		report, err := r.Reconcile(ctx)
		require.NoError(t, err)
		assert.Zero(t, report.Examined, "younger than the threshold: left alone")

		e.clock.Advance(2 * time.Minute)
		report, err = r.Reconcile(ctx)
		require.NoError(t, err)
		assert.Equal(t, payment.ReconcileReport{Examined: 1, Settled: 1}, report)
		assert.Equal(t, payment.StateApproved, e.get(t, "pay-1").State)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:reconciler"}, e.history(t, "pay-1"))
		assert.Equal(t, 1, e.sim.Stats().Charges)
	})
}

// TestLostResponseNeverChargesTwice: the PG approves but its answer is lost. Without retries
// the payment is UNKNOWN; the client's retry (same payment ID) learns the approval. With the
// resilient gateway the retry happens at once. Either way the PG charged exactly once.
func TestLostResponseNeverChargesTwice(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		t.Run("client retry", func(t *testing.T) {
			e := newEnv(t, db, nil)
			e.sim.InjectFault("lost-1", pgsim.FaultLostResponse, 1)
			p, err := e.svc.Pay(ctx, card("lost-1", 7000))
			require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
			assert.Equal(t, payment.StateUnknown, p.State)
			assert.Equal(t, 1, e.sim.Charges("lost-1"), "the PG did charge")

			p, err = e.svc.Pay(ctx, card("lost-1", 7000))
			require.NoError(t, err)
			assert.Equal(t, payment.StateApproved, p.State)
			assert.Equal(t, 2, e.sim.ApproveCalls("lost-1"))
			assert.Equal(t, 1, e.sim.Stats().Charges)
			assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>UNKNOWN:no_answer", "UNKNOWN>APPROVED:gateway"}, e.history(t, "lost-1"))
		})
		t.Run("policy retry", func(t *testing.T) {
			e := newEnv(t, db, func(s *pgsim.Simulator) payment.Gateway {
				return testkit.Must(resilient.Wrap(s, resilient.WithRetries(3, time.Millisecond, 5*time.Millisecond)))(t)
			})
			e.sim.InjectFault("lost-2", pgsim.FaultLostResponse, 1)
			p, err := e.svc.Pay(ctx, card("lost-2", 7000))
			require.NoError(t, err)
			assert.Equal(t, payment.StateApproved, p.State)
			assert.Equal(t, 2, e.sim.ApproveCalls("lost-2"))
			assert.Equal(t, 1, e.sim.Stats().Charges)
		})
		t.Run("a PG without idempotency would charge twice", func(t *testing.T) {
			// Proves the assertions above can fail: the guarantee rests on the PG deduplicating
			// on the payment ID we send with every attempt.
			e := newEnv(t, db, func(s *pgsim.Simulator) payment.Gateway {
				return testkit.Must(resilient.Wrap(s, resilient.WithRetries(3, time.Millisecond, 5*time.Millisecond)))(t)
			}, pgsim.WithoutIdempotency())
			e.sim.InjectFault("lost-3", pgsim.FaultLostResponse, 1)
			_, err := e.svc.Pay(ctx, card("lost-3", 7000))
			require.NoError(t, err)
			assert.Equal(t, 2, e.sim.Stats().Charges)
		})
	})
}

// TestTimeoutLeavesUnknownAndReconcilerSettles: the PG processes the payment but answers after
// the per-attempt timeout, every time. The payment is UNKNOWN; the reconciler asks the PG and
// records what it says, approved or declined.
func TestTimeoutLeavesUnknownAndReconcilerSettles(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, func(s *pgsim.Simulator) payment.Gateway {
			return testkit.Must(resilient.Wrap(s, resilient.WithAttemptTimeout(50*time.Millisecond),
				resilient.WithRetries(2, time.Millisecond, 5*time.Millisecond)))(t)
		})
		approved, declined := card("slow-ok", 9000), card("slow-no", 9000)
		declined.Token = pgsim.TokenDecline
		for _, req := range []payment.PayRequest{approved, declined} {
			e.sim.InjectFault(req.PaymentID, pgsim.FaultSlow, 2)
			p, err := e.svc.Pay(ctx, req)
			require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
			assert.ErrorIs(t, err, resilient.ErrAttemptTimeout)
			assert.Equal(t, payment.StateUnknown, p.State)
			assert.Equal(t, 2, e.sim.ApproveCalls(req.PaymentID))
		}
		assert.Equal(t, 1, e.sim.Stats().Charges, "only the approved one was charged, once")

		e.clock.Advance(2 * time.Minute)
		report, err := testkit.Must(payment.NewReconciler(e.svc))(t).Reconcile(ctx)
		require.NoError(t, err)
		assert.Equal(t, payment.ReconcileReport{Examined: 2, Settled: 2}, report)

		p := e.get(t, "slow-ok")
		assert.Equal(t, payment.StateApproved, p.State)
		assert.NotEmpty(t, p.PGReference)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>UNKNOWN:no_answer", "UNKNOWN>APPROVED:reconciler"}, e.history(t, "slow-ok"))
		p = e.get(t, "slow-no")
		assert.Equal(t, payment.StateDeclined, p.State)
		assert.Equal(t, pgsim.CodeCardDeclined, p.DeclineCode)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>UNKNOWN:no_answer", "UNKNOWN>DECLINED:reconciler"}, e.history(t, "slow-no"))
		assert.Equal(t, 1, e.sim.Stats().Charges)
	})
}

// TestBreakerOpenKeepsPaymentsRetryable: under a failing PG the breaker opens; payments fail
// fast with ErrGatewayUnavailable and stay REQUESTED (never DECLINED); once the PG recovers
// they go through, each charged once.
func TestBreakerOpenKeepsPaymentsRetryable(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		var gw *resilient.Gateway
		e := newEnv(t, db, func(s *pgsim.Simulator) payment.Gateway {
			gw = testkit.Must(resilient.Wrap(s, resilient.WithRetries(1, time.Millisecond, time.Millisecond),
				resilient.WithBreaker(5, 10, breakerDelay), resilient.WithHalfOpenSuccesses(1)))(t)
			return gw
		})
		e.sim.SetFault(pgsim.FaultUnavailable)
		ids := []string{"b-1", "b-2", "b-3", "b-4", "b-5"}
		for _, id := range ids {
			p, err := e.svc.Pay(ctx, card(id, 1000))
			require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
			assert.Equal(t, payment.StateRequested, p.State)
		}
		require.Equal(t, resilient.BreakerOpen, gw.BreakerState())

		p, err := e.svc.Pay(ctx, card("b-6", 1000))
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		assert.ErrorIs(t, err, resilient.ErrBreakerOpen)
		assert.Equal(t, payment.StateRequested, p.State)
		assert.Zero(t, e.sim.ApproveCalls("b-6"), "an open breaker fails fast, without calling the PG")

		e.sim.SetFault(pgsim.FaultNone)
		require.Eventually(t, func() bool {
			p, err = e.svc.Pay(ctx, card("b-6", 1000))
			return err == nil
		}, 30*time.Second, 5*time.Millisecond, "the breaker to let a trial call through")
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Equal(t, resilient.BreakerClosed, gw.BreakerState())

		e.clock.Advance(time.Hour)
		report, err := testkit.Must(payment.NewReconciler(e.svc))(t).Reconcile(ctx)
		require.NoError(t, err)
		assert.Equal(t, payment.ReconcileReport{Examined: 5, Settled: 5}, report)
		for _, id := range append(ids, "b-6") {
			assert.Equal(t, payment.StateApproved, e.get(t, id).State, id)
			assert.Equal(t, 1, e.sim.Charges(id), id)
		}
		assert.Equal(t, 6, e.sim.Stats().Charges)
	})
}

// TestDeclineNeverRetried: a decline is final; retryable failures are retried with the same
// payment ID.
func TestDeclineNeverRetried(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, func(s *pgsim.Simulator) payment.Gateway {
			return testkit.Must(resilient.Wrap(s, resilient.WithRetries(5, time.Millisecond, 5*time.Millisecond)))(t)
		})
		req := card("no", 1000)
		req.Token = pgsim.TokenDecline
		_, err := e.svc.Pay(ctx, req)
		require.ErrorIs(t, err, payment.ErrDeclined)
		assert.Equal(t, 1, e.sim.ApproveCalls("no"))

		e.sim.InjectFault("flaky", pgsim.FaultUnavailable, 2)
		p, err := e.svc.Pay(ctx, card("flaky", 1000))
		require.NoError(t, err)
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Equal(t, 3, e.sim.ApproveCalls("flaky"))
		assert.Equal(t, 1, e.sim.Charges("flaky"))
	})
}

// TestCanceledCallerStillRecordsTheAnswer: when the caller gives up while the PG is working,
// the payment is UNKNOWN (not lost), and the context's error is returned.
func TestCanceledCallerStillRecordsTheAnswer(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		e := newEnv(t, db, nil)
		e.sim.InjectFault("gone", pgsim.FaultSlow, 1)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for e.sim.InFlight() == 0 {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		p, err := e.svc.Pay(ctx, card("gone", 1000))
		require.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, payment.ErrOutcomeUnknown)
		assert.Equal(t, payment.StateUnknown, p.State)
		assert.Equal(t, payment.StateUnknown, e.get(t, "gone").State)

		p, err = e.svc.Pay(context.Background(), card("gone", 1000))
		require.NoError(t, err)
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Equal(t, 1, e.sim.Stats().Charges)
	})
}

func TestNewNeedsDatabaseAndGateway(t *testing.T) {
	_, err := payment.New(nil, testkit.Must(pgsim.New())(t))
	assert.Error(t, err)
	_, err = payment.New(testenv.SQLite(t), nil)
	assert.Error(t, err)
}

// TestIdempotencyKeyChargesOnce is the end-to-end guarantee of an idempotent payment
// request: 50 clients send the same request with one Idempotency-Key at once (payments on
// MySQL, keys on Redis, a PG that takes a few milliseconds). The PG charges exactly once;
// every client gets either the first request's response or ErrInProgress; every retry after
// the first completes gets the byte-identical stored response; and the key with another
// body is rejected.
func TestIdempotencyKeyChargesOnce(t *testing.T) {
	ctx := context.Background()
	db := testenv.MySQL(t)
	require.NoError(t, payment.CreateSchema(ctx, db))
	sim := testkit.Must(pgsim.New(pgsim.WithLatency(5*time.Millisecond, 10*time.Millisecond)))(t)
	t.Cleanup(sim.Close)
	svc, err := payment.New(db, sim)
	require.NoError(t, err)
	keys, err := idempotency.New(redisidempotency.New(testenv.Redis(t)))
	require.NoError(t, err)

	pay := func(body []byte) idempotency.Func {
		return func(ctx context.Context) (idempotency.Response, error) {
			var req payment.PayRequest
			if err := json.Unmarshal(body, &req); err != nil {
				return idempotency.Response{Status: 400, ErrorCode: "malformed"}, nil
			}
			p, err := svc.Pay(ctx, req)
			var decline *payment.DeclineError
			switch {
			case err == nil:
			case errors.As(err, &decline):
				return idempotency.Response{Status: 402, ErrorCode: "declined"}, nil
			default:
				return idempotency.Response{}, err // transient: release the key for a retry
			}
			out, err := json.Marshal(p)
			return idempotency.Response{Status: 201, Body: out}, err
		}
	}
	body, err := json.Marshal(payment.PayRequest{PaymentID: "pay-1", OrderID: "order-1", Amount: 12_000, Currency: "KRW", Method: payment.MethodCard})
	require.NoError(t, err)
	fp := idempotency.FingerprintRequest("POST", "/v1/orders/order-1/payments", body)

	const clients = 50
	type result struct {
		resp     idempotency.Response
		replayed bool
		err      error
	}
	results := make([]result, clients)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, replayed, err := keys.Do(ctx, "user-1", "key-1", fp, pay(body))
			results[i] = result{r, replayed, err}
		}()
	}
	close(start)
	wg.Wait()

	var first *idempotency.Response
	inProgress := 0
	for _, r := range results {
		if errors.Is(r.err, idempotency.ErrInProgress) {
			inProgress++
			continue
		}
		require.NoError(t, r.err)
		require.Equal(t, 201, r.resp.Status)
		if first == nil {
			first = &r.resp
		}
		assert.Equal(t, first.Body, r.resp.Body, "every completed answer is the first request's response")
	}
	require.NotNil(t, first, "one request ran")
	assert.Equal(t, 1, sim.Stats().Charges, "the PG charged exactly once")
	assert.Equal(t, 1, sim.Charges("pay-1"))
	t.Logf("%d clients: %d got the response, %d got ErrInProgress; PG charges: %d",
		clients, clients-inProgress, inProgress, sim.Stats().Charges)

	for range 5 {
		r, replayed, err := keys.Do(ctx, "user-1", "key-1", fp, pay(body))
		require.NoError(t, err)
		assert.True(t, replayed)
		assert.Equal(t, first.Body, r.Body, "a retry replays the stored response byte for byte")
	}
	other, err := json.Marshal(payment.PayRequest{PaymentID: "pay-1", OrderID: "order-1", Amount: 99_000, Currency: "KRW", Method: payment.MethodCard})
	require.NoError(t, err)
	_, _, err = keys.Do(ctx, "user-1", "key-1", idempotency.FingerprintRequest("POST", "/v1/orders/order-1/payments", other), pay(other))
	assert.ErrorIs(t, err, idempotency.ErrKeyReused)
	assert.Equal(t, 1, sim.Stats().Charges, "nothing more was charged")
}

// TestConstructorsRefuseBadOptions checks that New and NewReconciler refuse every invalid
// option value with an error naming the option. Valid values are shown taking effect by
// the tests using them (WithThreshold, WithBatchSize and WithConcurrency in
// TestReconcilerRun, WithClock and WithWebhookVerifier everywhere).
func TestConstructorsRefuseBadOptions(t *testing.T) {
	db := testenv.SQLite(t)
	sim := testkit.Must(pgsim.New())(t)
	t.Cleanup(sim.Close)
	testkit.RefusesBadOptions(t, func(opts ...payment.Option) (*payment.Service, error) { return payment.New(db, sim, opts...) },
		map[string]payment.Option{
			"WithClock: nil":            payment.WithClock(nil),
			"WithLogger: nil":           payment.WithLogger(nil),
			"WithObserver: nil":         payment.WithObserver(nil),
			"WithWebhookVerifier: nil":  payment.WithWebhookVerifier(nil),
			"WithGatewayKeyWindow: 0s":  payment.WithGatewayKeyWindow(0),
			"WithGatewayKeyWindow: -1s": payment.WithGatewayKeyWindow(-time.Second),
		})

	svc := testkit.Must(payment.New(db, sim))(t)
	construct := func(opts ...payment.ReconcilerOption) (*payment.Reconciler, error) {
		return payment.NewReconciler(svc, opts...)
	}
	testkit.RefusesBadOptions(t, construct, map[string]payment.ReconcilerOption{
		"WithThreshold: -1s":  payment.WithThreshold(-time.Second),
		"WithInterval: 0s":    payment.WithInterval(0),
		"WithInterval: -1s":   payment.WithInterval(-time.Second),
		"WithBatchSize: 0":    payment.WithBatchSize(0),
		"WithBatchSize: -1":   payment.WithBatchSize(-1),
		"WithConcurrency: 0":  payment.WithConcurrency(0),
		"WithConcurrency: -1": payment.WithConcurrency(-1),
	})
	testkit.Must(construct(payment.WithThreshold(0), payment.WithInterval(time.Millisecond),
		payment.WithBatchSize(1), payment.WithConcurrency(1)))(t)
}

var errRollback = errors.New("the caller's work failed")

// TestRequestJoinsTheCallersTransaction: a payment recorded by Request in a caller's
// transaction commits and rolls back with it; Submit charges only what is committed, once.
func TestRequestJoinsTheCallersTransaction(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		req := card("pay-tx", 12_000)

		// Rolled back with the caller: no record, and Submit refuses to call the PG for it.
		err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			p, err := e.svc.Request(ctx, tx, req)
			require.NoError(t, err)
			assert.Equal(t, payment.StateRequested, p.State)
			if db.Dialect().Name() == dialect.MySQL { // SQLite has one connection: it would wait for tx
				_, err := e.svc.Submit(ctx, req)
				assert.ErrorIs(t, err, payment.ErrPaymentNotFound, "not committed yet: not submitted")
			}
			return errRollback
		})
		require.ErrorIs(t, err, errRollback)
		_, err = e.svc.Get(ctx, req.PaymentID)
		require.ErrorIs(t, err, payment.ErrPaymentNotFound, "rolled back with the caller")
		_, err = e.svc.Submit(ctx, req)
		require.ErrorIs(t, err, payment.ErrPaymentNotFound)
		assert.Zero(t, e.sim.ApproveCalls(req.PaymentID), "the PG is never called for a payment not on record")

		// Committed with the caller: REQUESTED, the PG not called yet; Submit charges it once.
		var recorded payment.Payment
		require.NoError(t, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			recorded, err = e.svc.Request(ctx, tx, req)
			return err
		}))
		assert.Equal(t, recorded, e.get(t, req.PaymentID))
		assert.Equal(t, []string{">REQUESTED:created"}, e.history(t, req.PaymentID))
		assert.Zero(t, e.sim.ApproveCalls(req.PaymentID))

		p, err := e.svc.Submit(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}, e.history(t, req.PaymentID))

		// Replays answer the same without a second call: Submit, Pay, and Request (in a
		// transaction or not) return the payment as it is.
		for name, replay := range map[string]func() (payment.Payment, error){
			"Submit": func() (payment.Payment, error) { return e.svc.Submit(ctx, req) },
			"Pay":    func() (payment.Payment, error) { return e.svc.Pay(ctx, req) },
			"Request": func() (payment.Payment, error) {
				var got payment.Payment
				err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) (err error) {
					got, err = e.svc.Request(ctx, tx, req)
					return err
				})
				return got, err
			},
		} {
			got, err := replay()
			require.NoError(t, err, name)
			assert.Equal(t, p, got, name)
		}
		assert.Equal(t, 1, e.sim.ApproveCalls(req.PaymentID))
		assert.Equal(t, 1, e.sim.Charges(req.PaymentID))
		// The Observer heard of both creations, the rolled-back one included (as documented).
		assert.Equal(t, 2, e.obs.count(req.PaymentID, payment.StateRequested))
	})
}

// TestRequestFailureLeavesTheCallersTransactionUsable: a refused Request (bad input, a reused
// ID) records nothing and undoes only itself; the caller's other work still commits.
func TestRequestFailureLeavesTheCallersTransactionUsable(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		testkit.Must(e.svc.Request(ctx, db, card("pay-1", 1000)))(t)

		require.NoError(t, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			reused := card("pay-1", 2000)
			_, err := e.svc.Request(ctx, tx, reused)
			assert.ErrorIs(t, err, payment.ErrPaymentIDReused)
			_, err = e.svc.Request(ctx, tx, card("pay-bad", 0))
			var ve *payment.ValidationError
			assert.ErrorAs(t, err, &ve)
			_, err = e.svc.Request(ctx, tx, card("pay-2", 3000))
			return err
		}))
		assert.Equal(t, int64(1000), e.get(t, "pay-1").Amount)
		assert.Equal(t, payment.StateRequested, e.get(t, "pay-2").State)
		_, err := e.svc.Get(ctx, "pay-bad")
		assert.ErrorIs(t, err, payment.ErrPaymentNotFound)

		// Submit refuses bad input and a request other than the recorded one, calling nothing.
		_, err = e.svc.Submit(ctx, card("pay-1", 2000))
		assert.ErrorIs(t, err, payment.ErrPaymentIDReused)
		_, err = e.svc.Submit(ctx, card("pay-1", 0))
		assert.ErrorIs(t, err, payment.ErrInvalidRequest)
		assert.Zero(t, e.sim.Stats().ApproveCalls)
	})
}

// TestRequestedNeverSubmittedIsChargedOnceByTheReconciler: the caller dies between the
// commit of its transaction and Submit; the Reconciler submits the payment, and the
// caller's late Submit finds it settled: one charge.
func TestRequestedNeverSubmittedIsChargedOnceByTheReconciler(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		req := card("pay-crash", 5000)
		require.NoError(t, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			_, err := e.svc.Request(ctx, tx, req)
			return err
		}))
		rec := testkit.Must(payment.NewReconciler(e.svc, payment.WithThreshold(0)))(t)
		rep, err := rec.Reconcile(ctx)
		require.NoError(t, err)
		assert.Equal(t, payment.ReconcileReport{Examined: 1, Settled: 1}, rep)
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:reconciler"}, e.history(t, req.PaymentID))

		p, err := e.svc.Submit(ctx, req)
		require.NoError(t, err)
		assert.Equal(t, payment.StateApproved, p.State)
		assert.Equal(t, 1, e.sim.ApproveCalls(req.PaymentID))
		assert.Equal(t, 1, e.sim.Charges(req.PaymentID))
	})
}

// pgKeyRetention is how long the simulator keeps its idempotency keys in these tests, as
// Stripe keeps its own: a key repeated after it is pruned is a new request.
const pgKeyRetention = 24 * time.Hour

// newForgetfulEnv is an env whose simulator, on the env's clock, prunes its idempotency keys
// after pgKeyRetention.
func newForgetfulEnv(t *testing.T, db *bun.DB) *env {
	t.Helper()
	var e *env
	e = newEnv(t, db, nil, pgsim.WithKeyRetention(pgKeyRetention),
		pgsim.WithClock(func() time.Time { return e.clock.Now() }))
	return e
}

// TestRetryAfterTheGatewayPrunedItsKeyChargesOnce: a payment whose outcome is unknown (a lost
// response) or that the PG charged just before we died (left REQUESTED) is retried a day
// later, after the PG has pruned its idempotency key. The retry must learn the PG's answer
// (Status) rather than send the approval again, which the PG would take as a new charge.
func TestRetryAfterTheGatewayPrunedItsKeyChargesOnce(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		pay := func(e *env, req payment.PayRequest) (payment.Payment, error) { return e.svc.Pay(ctx, req) }
		diedAfterTheCharge := func(t *testing.T, e *env, req payment.PayRequest) {
			require.NoError(t, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				_, err := e.svc.Request(ctx, tx, req)
				return err
			}))
			_, err := e.sim.Approve(ctx, payment.ApproveRequest(req)) // its answer is never recorded
			require.NoError(t, err)
		}
		for _, tc := range []struct {
			name    string
			unknown func(t *testing.T, e *env, req payment.PayRequest) // leaves req unsettled
			retry   func(e *env, req payment.PayRequest) (payment.Payment, error)
			history []string
		}{
			{"lost response, Pay again", func(t *testing.T, e *env, req payment.PayRequest) {
				e.sim.InjectFault(req.PaymentID, pgsim.FaultLostResponse, 1)
				p, err := e.svc.Pay(ctx, req)
				require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
				require.Equal(t, payment.StateUnknown, p.State)
			}, pay, []string{">REQUESTED:created", "REQUESTED>UNKNOWN:no_answer", "UNKNOWN>APPROVED:gateway"}},
			{"charged, then the process died; Submit again", diedAfterTheCharge,
				func(e *env, req payment.PayRequest) (payment.Payment, error) { return e.svc.Submit(ctx, req) },
				[]string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}},
			{"charged, then the process died; the Reconciler", diedAfterTheCharge,
				func(e *env, req payment.PayRequest) (payment.Payment, error) {
					rec, err := payment.NewReconciler(e.svc)
					if err != nil {
						return payment.Payment{}, err
					}
					if _, err := rec.Reconcile(ctx); err != nil {
						return payment.Payment{}, err
					}
					return e.svc.Get(ctx, req.PaymentID)
				},
				[]string{">REQUESTED:created", "REQUESTED>APPROVED:reconciler"}},
			{"never reached the PG; Pay again", func(t *testing.T, e *env, req payment.PayRequest) {
				e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1)
				_, err := e.svc.Pay(ctx, req)
				require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
			}, pay, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newForgetfulEnv(t, db)
				req := card("late-"+tc.name, 7000)
				tc.unknown(t, e, req)

				e.clock.Advance(pgKeyRetention + time.Hour)
				p, err := tc.retry(e, req)
				require.NoError(t, err)
				assert.Equal(t, payment.StateApproved, p.State)
				assert.Equal(t, 1, e.sim.Charges(req.PaymentID), "charged once")
				assert.Equal(t, 1, e.sim.Stats().Charges)
				assert.Equal(t, tc.history, e.history(t, req.PaymentID))
			})
		}
	})
}

// TestLateRetriesRacingChargeOnce: past the key window, many retries and a reconciler race
// to settle a payment the PG charged before its answer was lost, and one it never saw: each
// is charged exactly once and moved once.
func TestLateRetriesRacingChargeOnce(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newForgetfulEnv(t, db)
		charged, unseen := card("race-charged", 5000), card("race-unseen", 6000)
		e.raceLate(t, charged.PaymentID, unseen.PaymentID, func(i int) error {
			_, err := e.svc.Pay(ctx, []payment.PayRequest{charged, unseen}[i])
			return err
		})

		for _, req := range []payment.PayRequest{charged, unseen} {
			assert.Equal(t, 1, e.sim.Charges(req.PaymentID), req.PaymentID)
			assert.Equal(t, 1, e.obs.count(req.PaymentID, payment.StateApproved), req.PaymentID)
			assert.Equal(t, payment.StateApproved, e.get(t, req.PaymentID).State)
		}
		assert.Equal(t, 2, e.sim.Stats().Charges)
	})
}

// TestLateRetryThroughAProxyAnswering404ChargesOnce: a payment whose answer was lost is
// retried after the PG pruned its key, through the HTTP adapter, while a proxy in front of
// the PG answers its lookups with a bare 404 (a route or load balancer misconfigured). That
// 404 is not the PG saying it never saw the payment: the approval must not be sent again
// (it would charge twice); the payment stays UNKNOWN.
func TestLateRetryThroughAProxyAnswering404ChargesOnce(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		var (
			e       *env
			proxied atomic.Bool
		)
		e = newEnv(t, db, func(s *pgsim.Simulator) payment.Gateway {
			pg := pgsim.NewHandler(s)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && proxied.Load() {
					http.NotFound(w, r)
					return
				}
				pg.ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)
			return testkit.Must(pgsim.NewClient(srv.URL))(t)
		}, pgsim.WithKeyRetention(pgKeyRetention), pgsim.WithClock(func() time.Time { return e.clock.Now() }))
		req := card("pay-proxy", 7000)
		e.sim.InjectFault(req.PaymentID, pgsim.FaultLostResponse, 1)
		_, err := e.svc.Pay(ctx, req)
		require.ErrorIs(t, err, payment.ErrOutcomeUnknown)

		e.clock.Advance(pgKeyRetention + time.Hour)
		proxied.Store(true)
		p, err := e.svc.Pay(ctx, req)
		require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
		assert.NotErrorIs(t, err, payment.ErrNotAtGateway)
		assert.Equal(t, payment.StateUnknown, p.State)
		assert.Equal(t, payment.StateUnknown, e.get(t, req.PaymentID).State)
		assert.Equal(t, 1, e.sim.Charges(req.PaymentID), "charged once")
		assert.Equal(t, 1, e.sim.ApproveCalls(req.PaymentID), "not sent again")
	})
}

// TestKeyWindowBoundary: with a key window as long as the PG keeps its keys, a payment whose
// answer was lost is retried a microsecond (the clock's resolution) before the window ends,
// on its key alone (the PG still deduplicates), and exactly at its end, when the PG has just
// pruned the key, by looking it up. Either way it is charged once.
func TestKeyWindowBoundary(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		for statuses, after := range []time.Duration{pgKeyRetention - time.Microsecond, pgKeyRetention} {
			t.Run(after.String(), func(t *testing.T) {
				e := newForgetfulEnv(t, db)
				svc := testkit.Must(payment.New(db, e.sim, payment.WithClock(e.clock.Now),
					payment.WithGatewayKeyWindow(pgKeyRetention)))(t)
				req := card("edge-"+after.String(), 7000)
				e.sim.InjectFault(req.PaymentID, pgsim.FaultLostResponse, 1)
				_, err := svc.Pay(ctx, req)
				require.ErrorIs(t, err, payment.ErrOutcomeUnknown)

				e.clock.Advance(after)
				p, err := svc.Pay(ctx, req)
				require.NoError(t, err)
				assert.Equal(t, payment.StateApproved, p.State)
				assert.Equal(t, 1, e.sim.Charges(req.PaymentID), "charged once")
				assert.Equal(t, statuses, e.sim.Stats().StatusCalls, "looked up only at the end")
			})
		}
	})
}

// TestLateRetryWhileTheFirstCallHangs: the first approval is still hanging (processed and its
// answer not yet back, or not processed yet) when the client retries after the key window.
// The retry settles the payment from the PG's answer (or sends it, the PG never having seen
// it); the first call's end, a timeout, changes nothing: APPROVED, charged once.
func TestLateRetryWhileTheFirstCallHangs(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		for _, tc := range []struct {
			name    string
			fault   pgsim.Fault
			charged int // by the first call, while it hangs
		}{
			{"processed", pgsim.FaultSlow, 1},
			{"not processed", pgsim.FaultTimeout, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newForgetfulEnv(t, db)
				req := card("hang-"+tc.name, 7000)
				e.sim.InjectFault(req.PaymentID, tc.fault, 1)
				ctx, cancel := context.WithCancel(context.Background())
				first := make(chan error, 1)
				go func() {
					_, err := e.svc.Pay(ctx, req)
					first <- err
				}()
				require.Eventually(t, func() bool {
					return e.sim.InFlight() == 1 && e.sim.Charges(req.PaymentID) == tc.charged
				}, 5*time.Second, time.Millisecond)

				e.clock.Advance(pgKeyRetention + time.Hour)
				p, err := e.svc.Pay(context.Background(), req)
				require.NoError(t, err)
				assert.Equal(t, payment.StateApproved, p.State)
				cancel()
				require.NoError(t, <-first, "the payment is APPROVED when the first call ends")

				assert.Equal(t, payment.StateApproved, e.get(t, req.PaymentID).State)
				assert.Equal(t, 1, e.sim.Charges(req.PaymentID), "charged once")
				assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>APPROVED:gateway"}, e.history(t, req.PaymentID))
			})
		}
	})
}

// held is a gateway that holds each call in calls (say "approve:att-1") once: it signals
// on entered, then waits until release is closed before passing the call on.
type held struct {
	payment.Gateway
	calls   map[string]bool
	entered chan string
	release chan struct{}
	mu      sync.Mutex
}

func newHeld(calls ...string) *held {
	h := &held{calls: map[string]bool{}, entered: make(chan string, 8), release: make(chan struct{})}
	for _, c := range calls {
		h.calls[c] = true
	}
	return h
}

// wrap puts h in front of the simulator (for newEnv).
func (h *held) wrap(s *pgsim.Simulator) payment.Gateway {
	h.Gateway = s
	return h
}

func (h *held) wait(call string) {
	h.mu.Lock()
	hit := h.calls[call]
	delete(h.calls, call)
	h.mu.Unlock()
	if hit {
		h.entered <- call
		<-h.release
	}
}

func (h *held) Approve(ctx context.Context, req payment.ApproveRequest) (payment.Approval, error) {
	h.wait("approve:" + req.PaymentID)
	return h.Gateway.Approve(ctx, req)
}

func (h *held) Status(ctx context.Context, id string) (payment.GatewayPayment, error) {
	h.wait("status:" + id)
	return h.Gateway.Status(ctx, id)
}

// record records req as its own caller would, in a transaction of its own.
func (e *env) record(t *testing.T, req payment.PayRequest) {
	t.Helper()
	_, err := e.svc.Request(context.Background(), e.db, req)
	require.NoError(t, err)
}

// TestAttemptAbandons: an Attempt whose PG call was certainly not processed abandons the
// payment (ErrAbandoned, which is ErrGatewayUnavailable and errcode.ErrUnavailable); nothing
// ever sends an ABANDONED payment again: Submit, Pay and the Reconciler leave it as it is.
// An unknown outcome is not abandoned, nor is an answered call.
func TestAttemptAbandons(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := newEnv(t, db, nil)
		req := card("att-1", 5000)
		e.record(t, req)
		e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1)
		p, err := e.svc.Attempt(ctx, req)
		require.ErrorIs(t, err, payment.ErrAbandoned)
		assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		assert.ErrorIs(t, err, errcode.ErrUnavailable)
		assert.Equal(t, payment.StateAbandoned, p.State)
		assert.Equal(t, p, e.get(t, req.PaymentID))
		assert.Equal(t, []string{">REQUESTED:created", "REQUESTED>ABANDONED:abandoned"}, e.history(t, req.PaymentID))
		assert.Equal(t, 1, e.obs.count(req.PaymentID, payment.StateAbandoned))

		for name, call := range map[string]func() (payment.Payment, error){
			"Submit":  func() (payment.Payment, error) { return e.svc.Submit(ctx, req) },
			"Pay":     func() (payment.Payment, error) { return e.svc.Pay(ctx, req) },
			"Attempt": func() (payment.Payment, error) { return e.svc.Attempt(ctx, req) },
		} {
			p, err := call()
			require.ErrorIs(t, err, payment.ErrAbandoned, name)
			assert.Equal(t, payment.StateAbandoned, p.State, name)
		}
		e.clock.Advance(time.Hour)
		report, err := testkit.Must(payment.NewReconciler(e.svc, payment.WithThreshold(0)))(t).Reconcile(ctx)
		require.NoError(t, err)
		assert.Zero(t, report.Examined)
		assert.Equal(t, 1, e.sim.ApproveCalls(req.PaymentID), "an abandoned payment is never sent again")
		assert.Zero(t, e.sim.Stats().Charges)
		mm, err := e.svc.CrossCheck(ctx)
		require.NoError(t, err)
		assert.Empty(t, mm, "an abandoned payment the PG never saw agrees with it")

		unknown := card("att-2", 5000)
		e.record(t, unknown)
		e.sim.InjectFault(unknown.PaymentID, pgsim.FaultError, 1)
		p, err = e.svc.Attempt(ctx, unknown)
		require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
		assert.ErrorIs(t, err, errcode.ErrUnavailable)
		assert.Equal(t, payment.StateUnknown, p.State, "the PG may have processed it: never abandoned")

		ok := card("att-3", 5000)
		e.record(t, ok)
		p, err = e.svc.Attempt(ctx, ok)
		require.NoError(t, err)
		assert.Equal(t, payment.StateApproved, p.State)
	})
}

// TestAbandonRacesSubmission: of an Attempt abandoning a payment and another submitter (the
// Reconciler, a client's Submit) sending it, exactly one goes ahead, whichever order their
// steps interleave in, and the PG charges it at most once.
func TestAbandonRacesSubmission(t *testing.T) {
	eachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		reconcile := func(t *testing.T, e *env) {
			_, err := testkit.Must(payment.NewReconciler(e.svc, payment.WithThreshold(0)))(t).Reconcile(ctx)
			assert.NoError(t, err)
		}
		// start records payment id on an env whose gateway holds the first call made (approve
		// or status) about it.
		start := func(t *testing.T, call, id string) (*env, *held, payment.PayRequest) {
			g := newHeld(call + ":" + id)
			e := newEnv(t, db, g.wrap)
			req := card(id, 5000)
			e.record(t, req)
			return e, g, req
		}
		// attempt runs Attempt in the background; wait returns its result.
		attempt := func(e *env, req payment.PayRequest) (wait func() (payment.Payment, error)) {
			done := make(chan struct{})
			var (
				p   payment.Payment
				err error
			)
			go func() { defer close(done); p, err = e.svc.Attempt(ctx, req) }()
			return func() (payment.Payment, error) { <-done; return p, err }
		}
		// heldReconcile runs the reconciler in the background until its first call about
		// the payment is held by g; release g, then wait for it.
		heldReconcile := func(t *testing.T, e *env, g *held) (wait func()) {
			done := make(chan struct{})
			go func() { defer close(done); reconcile(t, e) }()
			<-g.entered
			return func() { <-done }
		}
		// requireKept checks Attempt's answer for a payment another submitter took up: the
		// call was refused, and the payment is left to that submitter, not abandoned.
		requireKept := func(t *testing.T, p payment.Payment, err error) {
			require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
			assert.NotErrorIs(t, err, payment.ErrAbandoned, "taken up by the reconciler: not the attempt's to abandon")
			assert.Equal(t, payment.StateRequested, p.State)
		}

		t.Run("the reconciler sends it while the attempt's call is refused", func(t *testing.T) {
			e, g, req := start(t, "approve", "race-1")
			wait := attempt(e, req)
			<-g.entered
			e.clock.Advance(time.Second) // past the attempt's take-up
			// The attempt's call is in flight: the reconciler takes the payment up and charges it.
			reconcile(t, e)
			assert.Equal(t, payment.StateApproved, e.get(t, req.PaymentID).State)
			e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1) // the attempt's call is refused
			close(g.release)
			p, err := wait()
			require.NoError(t, err, "the attempt finds it approved, not abandoned")
			assert.Equal(t, payment.StateApproved, p.State)
			assert.Equal(t, 1, e.sim.Charges(req.PaymentID))
		})

		t.Run("the reconciler takes it up while the PG is down", func(t *testing.T) {
			e, g, req := start(t, "approve", "race-2")
			// Both the attempt's approval and the reconciler's are refused.
			e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 2)
			wait := attempt(e, req)
			<-g.entered
			e.clock.Advance(time.Second) // past the attempt's take-up
			reconcile(t, e)
			close(g.release)
			p, err := wait()
			requireKept(t, p, err)
			e.clock.Advance(time.Second) // past the reconciler's take-up
			reconcile(t, e)
			assert.Equal(t, payment.StateApproved, e.get(t, req.PaymentID).State)
			assert.Equal(t, 1, e.sim.Charges(req.PaymentID))
		})

		t.Run("the reconciler took it up before the attempt read it", func(t *testing.T) {
			e, g, req := start(t, "approve", "race-4")
			reconciled := heldReconcile(t, e, g)                        // taken up; the reconciler's call is on its way to the PG
			e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1) // the attempt's call, arriving first, is refused
			p, err := e.svc.Attempt(ctx, req)
			requireKept(t, p, err)
			close(g.release)
			reconciled()
			assert.Equal(t, payment.StateApproved, e.get(t, req.PaymentID).State)
			assert.Equal(t, 1, e.sim.Charges(req.PaymentID))
		})

		t.Run("the attempt abandons it while the reconciler looks it up", func(t *testing.T) {
			e, g, req := start(t, "status", "race-3")
			reconciled := heldReconcile(t, e, g) // the reconciler read it REQUESTED and asks the PG about it
			e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1)
			p, err := e.svc.Attempt(ctx, req)
			require.ErrorIs(t, err, payment.ErrAbandoned)
			assert.Equal(t, payment.StateAbandoned, p.State)
			close(g.release)
			reconciled()
			assert.Equal(t, payment.StateAbandoned, e.get(t, req.PaymentID).State, "the reconciler does not send it")
			assert.Equal(t, 1, e.sim.ApproveCalls(req.PaymentID))
			assert.Zero(t, e.sim.Charges(req.PaymentID))
		})

		t.Run("many at once", func(t *testing.T) {
			e := newEnv(t, db, nil)
			for i := range 20 {
				req := card(fmt.Sprintf("many-%d", i), 5000)
				e.record(t, req)
				e.sim.InjectFault(req.PaymentID, pgsim.FaultUnavailable, 1)
				var wg sync.WaitGroup
				wg.Go(func() { _, _ = e.svc.Attempt(ctx, req) })
				wg.Go(func() { reconcile(t, e) })
				wg.Go(func() { _, _ = e.svc.Submit(ctx, req) })
				wg.Wait()
				p := e.get(t, req.PaymentID)
				switch p.State {
				case payment.StateAbandoned:
					assert.Zero(t, e.sim.Charges(req.PaymentID), req.PaymentID)
				case payment.StateApproved, payment.StateRequested:
					assert.LessOrEqual(t, e.sim.Charges(req.PaymentID), 1, req.PaymentID)
				default:
					t.Errorf("%s: %s", req.PaymentID, p.State)
				}
				e.clock.Advance(time.Second)
				reconcile(t, e)
				if p = e.get(t, req.PaymentID); p.State == payment.StateAbandoned {
					assert.Zero(t, e.sim.Charges(req.PaymentID), req.PaymentID)
				} else {
					assert.Equal(t, payment.StateApproved, p.State, req.PaymentID)
					assert.Equal(t, 1, e.sim.Charges(req.PaymentID), req.PaymentID)
				}
			}
		})
	})
}
