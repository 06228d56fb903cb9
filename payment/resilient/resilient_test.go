package resilient_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/observe"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/payment/resilient"
)

// fast is retries without noticeable pauses.
var fast = resilient.WithRetries(3, time.Millisecond, 5*time.Millisecond)

func approve(id string) payment.ApproveRequest {
	return payment.ApproveRequest{PaymentID: id, OrderID: "o-" + id, Amount: 1000, Currency: "KRW", Method: payment.MethodCard, Token: "tok_visa"}
}

func newSim(t *testing.T, opts ...pgsim.Option) *pgsim.Simulator {
	sim := testkit.Must(pgsim.New(opts...))(t)
	t.Cleanup(sim.Close)
	return sim
}

// TestBreakerOpensAndRecovers drives the breaker by call outcomes: it opens at 5 failures of
// the last 10 calls, fails fast without calling the PG while open, lets a trial call through
// after its delay, reopens when the trial fails, and closes after 3 trial successes.
func TestBreakerOpensAndRecovers(t *testing.T) {
	ctx := context.Background()
	sim := newSim(t)
	log := &observe.Recorder{}
	gw := testkit.Must(resilient.Wrap(sim, resilient.WithRetries(1, time.Millisecond, time.Millisecond),
		resilient.WithBreaker(5, 10, breakerDelay), resilient.WithHalfOpenSuccesses(3), resilient.WithObserver(log)))(t)
	n := 0
	call := func() error {
		n++
		_, err := gw.Approve(ctx, approve(fmt.Sprintf("p-%d", n)))
		return err
	}

	for range 10 {
		require.NoError(t, call())
	}
	sim.SetFault(pgsim.FaultUnavailable)
	for i := range 4 {
		require.ErrorIs(t, call(), payment.ErrGatewayUnavailable)
		require.Equal(t, resilient.BreakerClosed, gw.BreakerState(), "after %d failures", i+1)
	}
	require.ErrorIs(t, call(), payment.ErrGatewayUnavailable)
	require.Equal(t, resilient.BreakerOpen, gw.BreakerState(), "5 failures of the last 10 calls")

	before := sim.Stats().ApproveCalls
	err := call()
	require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
	require.ErrorIs(t, err, resilient.ErrBreakerOpen)
	assert.Equal(t, before, sim.Stats().ApproveCalls, "an open breaker does not call the PG")

	// Still failing: the first trial call after the delay reopens the breaker.
	require.Eventually(t, func() bool {
		_ = call()
		return sim.Stats().ApproveCalls > before
	}, 30*time.Second, 2*time.Millisecond, "a trial call")
	assert.Equal(t, resilient.BreakerOpen, gw.BreakerState())

	sim.SetFault(pgsim.FaultNone)
	require.Eventually(t, func() bool { return call() == nil }, 30*time.Second, 2*time.Millisecond, "a successful trial call")
	assert.Equal(t, resilient.BreakerHalfOpen, gw.BreakerState())
	require.NoError(t, call())
	assert.Equal(t, resilient.BreakerHalfOpen, gw.BreakerState())
	require.NoError(t, call())
	assert.Equal(t, resilient.BreakerClosed, gw.BreakerState())
	var changes []string
	for _, e := range log.Events("state_changed") {
		changes = append(changes, e.Labels["from"]+">"+e.Labels["to"])
	}
	assert.Equal(t, []string{"closed>open", "open>half-open", "half-open>open", "open>half-open", "half-open>closed"}, changes)
}

// TestRetries: only what may pass is retried, with the same key; a decline never is.
func TestRetries(t *testing.T) {
	ctx := context.Background()
	sim := newSim(t)

	for _, tc := range []struct {
		id      string
		token   string
		faults  []pgsim.Fault
		calls   int
		charges int
		want    error // nil: approved
	}{
		{id: "decline", token: pgsim.TokenDecline, calls: 1, want: payment.ErrDeclined},
		{id: "unavailable-twice", faults: []pgsim.Fault{pgsim.FaultUnavailable, pgsim.FaultUnavailable}, calls: 3, charges: 1},
		{id: "error-twice", faults: []pgsim.Fault{pgsim.FaultError, pgsim.FaultError}, calls: 3, charges: 1},
		{id: "lost-once", faults: []pgsim.Fault{pgsim.FaultLostResponse}, calls: 2, charges: 1},
		{id: "lost-then-declined", token: pgsim.TokenDecline, faults: []pgsim.Fault{pgsim.FaultLostResponse}, calls: 2, want: payment.ErrDeclined},
		{id: "unavailable-always", faults: []pgsim.Fault{pgsim.FaultUnavailable, pgsim.FaultUnavailable, pgsim.FaultUnavailable}, calls: 3, want: payment.ErrGatewayUnavailable},
		// Once an attempt may have been processed, running out of attempts is not "unavailable".
		{id: "lost-then-unavailable", faults: []pgsim.Fault{pgsim.FaultLostResponse, pgsim.FaultUnavailable, pgsim.FaultUnavailable}, calls: 3, charges: 1, want: payment.ErrOutcomeUnknown},
	} {
		t.Run(tc.id, func(t *testing.T) {
			gw := testkit.Must(resilient.Wrap(sim, fast))(t)
			for _, f := range tc.faults {
				sim.InjectFault(tc.id, f, 1)
			}
			req := approve(tc.id)
			if tc.token != "" {
				req.Token = tc.token
			}
			a, err := gw.Approve(ctx, req)
			if tc.want == nil {
				require.NoError(t, err)
				assert.NotEmpty(t, a.Reference)
			} else {
				require.ErrorIs(t, err, tc.want)
			}
			assert.Equal(t, tc.calls, sim.ApproveCalls(tc.id), "calls")
			assert.Equal(t, tc.charges, sim.Charges(tc.id), "charges")
		})
	}
}

// TestAttemptTimeout: an attempt that hangs is abandoned after the per-attempt timeout and
// retried; when all hang the outcome is unknown.
func TestAttemptTimeout(t *testing.T) {
	ctx := context.Background()
	sim := newSim(t)
	gw := testkit.Must(resilient.Wrap(sim, fast, resilient.WithAttemptTimeout(20*time.Millisecond)))(t)

	sim.InjectFault("hang", pgsim.FaultTimeout, 3)
	_, err := gw.Approve(ctx, approve("hang"))
	require.ErrorIs(t, err, payment.ErrOutcomeUnknown)
	assert.ErrorIs(t, err, resilient.ErrAttemptTimeout)
	assert.Equal(t, 3, sim.ApproveCalls("hang"))
	assert.Zero(t, sim.Charges("hang"))

	sim.InjectFault("slow-once", pgsim.FaultSlow, 1)
	_, err = gw.Approve(ctx, approve("slow-once"))
	require.NoError(t, err)
	assert.Equal(t, 2, sim.ApproveCalls("slow-once"))
	assert.Equal(t, 1, sim.Charges("slow-once"))
}

// TestBulkhead: calls beyond the limit fail at once without reaching the PG, and do not count
// against the PG's health.
func TestBulkhead(t *testing.T) {
	sim := newSim(t)
	gw := testkit.Must(resilient.Wrap(sim, resilient.WithBulkhead(2, 0), resilient.WithRetries(1, time.Millisecond, time.Millisecond)))(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, id := range []string{"a", "b"} {
		sim.InjectFault(id, pgsim.FaultTimeout, 1)
		wg.Go(func() {
			_, err := gw.Approve(ctx, approve(id))
			assert.ErrorIs(t, err, context.Canceled)
		})
	}
	require.Eventually(t, func() bool { return sim.InFlight() == 2 }, 30*time.Second, 2*time.Millisecond, "two calls in flight")
	for i := range 12 {
		id := fmt.Sprintf("c-%d", i)
		_, err := gw.Approve(context.Background(), approve(id))
		require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		require.ErrorIs(t, err, resilient.ErrBulkheadFull)
		assert.Zero(t, sim.ApproveCalls(id))
	}
	cancel()
	wg.Wait()
	assert.Equal(t, resilient.BreakerClosed, gw.BreakerState(), "neither a full bulkhead nor the caller's cancellation is the PG's failure")
	_, err := gw.Approve(context.Background(), approve("d"))
	require.NoError(t, err)
}

// TestRetryNeedsAKey: the executor refuses a call without an idempotency key, Once never
// retries, and an unclassified error is not retried.
func TestRetryNeedsAKey(t *testing.T) {
	ctx := context.Background()
	gw := testkit.Must(resilient.Wrap(newSim(t), fast))(t)
	var calls atomic.Int32
	flaky := func(ctx context.Context, k resilient.Key) (string, error) {
		calls.Add(1)
		return "", fmt.Errorf("503 for %s: %w", k, payment.ErrGatewayUnavailable)
	}

	_, err := resilient.Retry(ctx, gw, resilient.PaymentKey(""), flaky)
	assert.ErrorIs(t, err, payment.ErrInvalidRequest)
	assert.Zero(t, calls.Load())

	_, err = resilient.Retry(ctx, gw, resilient.CancelKey("c-1"), flaky)
	assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
	assert.EqualValues(t, 3, calls.Load())

	calls.Store(0)
	_, err = resilient.Once(ctx, gw, func(ctx context.Context) (string, error) { return flaky(ctx, resilient.Key{}) })
	assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
	assert.EqualValues(t, 1, calls.Load())

	calls.Store(0)
	boom := errors.New("boom")
	v, err := resilient.Retry(ctx, gw, resilient.PaymentKey("p"), func(ctx context.Context, k resilient.Key) (int, error) {
		calls.Add(1)
		return 0, boom
	})
	assert.ErrorIs(t, err, boom)
	assert.Zero(t, v)
	assert.EqualValues(t, 1, calls.Load(), "an error that says nothing about the PG is not retried")
}

// TestStatusAndCancelGoThroughThePolicies.
func TestStatusAndCancelGoThroughThePolicies(t *testing.T) {
	ctx := context.Background()
	sim := newSim(t)
	gw := testkit.Must(resilient.Wrap(sim, fast))(t)
	_, err := gw.Approve(ctx, approve("p"))
	require.NoError(t, err)

	sim.InjectFault("c-1", pgsim.FaultLostResponse, 1)
	c, err := gw.Cancel(ctx, payment.CancelRequest{CancelID: "c-1", PaymentID: "p", Amount: 400})
	require.NoError(t, err)
	assert.NotEmpty(t, c.Reference)
	assert.Equal(t, 1, sim.Stats().Cancels)

	st, err := gw.Status(ctx, "p")
	require.NoError(t, err)
	assert.Equal(t, payment.GatewayApproved, st.State)
	assert.Equal(t, int64(400), st.Canceled)
	_, err = gw.Status(ctx, "nope")
	assert.ErrorIs(t, err, payment.ErrNotAtGateway)
	assert.Equal(t, 2, sim.Stats().StatusCalls, "not found is an answer, not retried")
}

// BenchmarkGateway measures the policies' own overhead: approvals against the in-process
// simulator at zero latency, bare and wrapped.
// TestWrapRefusesBadOptions: every invalid option value is refused, naming the option.
// Valid ones are shown taking effect by the tests above (WithBulkhead(2, 0) in
// TestBulkhead, WithAttemptTimeout in TestAttemptTimeout, ...).
func TestWrapRefusesBadOptions(t *testing.T) {
	sim := newSim(t)
	testkit.RefusesBadOptions(t, func(opts ...resilient.Option) (*resilient.Gateway, error) {
		return resilient.Wrap(sim, opts...)
	}, map[string]resilient.Option{
		"WithAttemptTimeout: 0s":            resilient.WithAttemptTimeout(0),
		"WithRetries: 0 attempts":           resilient.WithRetries(0, time.Millisecond, time.Millisecond),
		"WithRetries: 1 attempts, 0s..1ms":  resilient.WithRetries(1, 0, time.Millisecond),
		"WithRetries: 1 attempts, 2ms..1ms": resilient.WithRetries(1, 2*time.Millisecond, time.Millisecond),
		"WithJitter: -0.1":                  resilient.WithJitter(-0.1),
		"WithJitter: 1.5":                   resilient.WithJitter(1.5),
		"WithBreaker: 0 of 10":              resilient.WithBreaker(0, 10, time.Second),
		"WithBreaker: 5 of 4":               resilient.WithBreaker(5, 4, time.Second),
		"WithBreaker: 1 of 1, 0s":           resilient.WithBreaker(1, 1, 0),
		"WithHalfOpenSuccesses: 0":          resilient.WithHalfOpenSuccesses(0),
		"WithBulkhead: 0, 0s":               resilient.WithBulkhead(0, 0),
		"WithBulkhead: 1, -1s":              resilient.WithBulkhead(1, -time.Second),
		"WithObserver: nil":                 resilient.WithObserver(nil),
		"WithLogger: nil":                   resilient.WithLogger(nil),
	})
}

func BenchmarkGateway(b *testing.B) {
	for _, bc := range []struct {
		name string
		wrap func(payment.Gateway) payment.Gateway
	}{
		{"bare", func(g payment.Gateway) payment.Gateway { return g }},
		{"policies", func(g payment.Gateway) payment.Gateway { return testkit.Must(resilient.Wrap(g))(b) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			sim := testkit.Must(pgsim.New())(b)
			defer sim.Close()
			gw := bc.wrap(sim)
			var seq atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if _, err := gw.Approve(ctx, approve(fmt.Sprint(seq.Add(1)))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "approvals/s")
		})
	}
}

// breakerDelay is how long an open breaker waits before a trial call in tests. failsafe-go's
// breaker clock cannot be injected, so the delay is real: long enough that a loaded CI machine
// reaches the next call before it passes, short enough for the tests that wait it out.
const breakerDelay = 300 * time.Millisecond

// TestReady: Ready calls nothing and says "unavailable" only while the breaker is open with
// some of its delay left, with that delay as the retry hint.
func TestReady(t *testing.T) {
	ctx := context.Background()
	sim := newSim(t)
	const openFor = 300 * time.Millisecond
	gw := testkit.Must(resilient.Wrap(sim, resilient.WithRetries(1, time.Millisecond, time.Millisecond),
		resilient.WithBreaker(1, 1, openFor), resilient.WithHalfOpenSuccesses(1)))(t)
	require.NoError(t, gw.Ready())

	sim.SetFault(pgsim.FaultUnavailable)
	_, err := gw.Approve(ctx, approve("p-1"))
	require.ErrorIs(t, err, payment.ErrGatewayUnavailable)
	require.Equal(t, resilient.BreakerOpen, gw.BreakerState())
	calls := sim.Stats().ApproveCalls

	err = gw.Ready()
	require.Error(t, err)
	assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
	assert.ErrorIs(t, err, resilient.ErrBreakerOpen)
	assert.ErrorIs(t, err, errcode.ErrUnavailable)
	wait := errcode.RetryAfter(err, 0)
	assert.Positive(t, wait)
	assert.LessOrEqual(t, wait, openFor)
	assert.Equal(t, calls, sim.Stats().ApproveCalls, "Ready calls nothing")

	// Once the delay has passed, the next call is a trial: Ready lets it through.
	require.Eventually(t, func() bool { return gw.Ready() == nil }, 10*time.Second, 5*time.Millisecond)
	sim.SetFault(pgsim.FaultNone)
	_, err = gw.Approve(ctx, approve("p-2"))
	require.NoError(t, err)
	assert.Equal(t, resilient.BreakerClosed, gw.BreakerState())
	assert.NoError(t, gw.Ready())
}
