package pgsim_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
)

func approve(id string) payment.ApproveRequest {
	return payment.ApproveRequest{PaymentID: id, OrderID: "o-" + id, Amount: 10_000, Currency: "KRW", Method: payment.MethodCard, Token: "tok_visa"}
}

func newSim(t *testing.T, opts ...pgsim.Option) *pgsim.Simulator {
	sim := testkit.Must(pgsim.New(opts...))(t)
	t.Cleanup(sim.Close)
	return sim
}

func declineCode(t *testing.T, err error) string {
	t.Helper()
	var d *payment.DeclineError
	require.ErrorAs(t, err, &d)
	return d.Code
}

func TestSimulatorIsIdempotentPerPaymentID(t *testing.T) {
	ctx := context.Background()
	sim := newSim(t)
	a1, err := sim.Approve(ctx, approve("p"))
	require.NoError(t, err)
	a2, err := sim.Approve(ctx, approve("p"))
	require.NoError(t, err)
	assert.Equal(t, a1, a2)
	assert.Equal(t, 1, sim.Charges("p"))
	assert.Equal(t, 2, sim.ApproveCalls("p"))

	other := approve("p")
	other.Amount = 1
	_, err = sim.Approve(ctx, other)
	assert.Equal(t, pgsim.CodeIdempotencyConflict, declineCode(t, err))
	assert.Equal(t, pgsim.Stats{ApproveCalls: 3, Charges: 1}, sim.Stats())

	declined := approve("d")
	declined.Token = pgsim.TokenDecline
	for range 2 {
		_, err = sim.Approve(ctx, declined)
		assert.Equal(t, pgsim.CodeCardDeclined, declineCode(t, err))
	}
	assert.Equal(t, 1, sim.Stats().Declines, "a replayed decline is not a new one")

	bad := approve("bad")
	bad.Amount = 0
	_, err = sim.Approve(ctx, bad)
	assert.Equal(t, pgsim.CodeInvalidRequest, declineCode(t, err))
}

func TestSimulatorDeclines(t *testing.T) {
	ctx := context.Background()
	sim := newSim(t)
	req := approve("f")
	req.Token = pgsim.TokenInsufficientFunds
	_, err := sim.Approve(ctx, req)
	assert.Equal(t, pgsim.CodeInsufficientFunds, declineCode(t, err))

	all := newSim(t, pgsim.WithDeclineRate(1))
	_, err = all.Approve(ctx, approve("x"))
	assert.Equal(t, pgsim.CodeDoNotHonor, declineCode(t, err))
	st, err := all.Status(ctx, "x")
	require.NoError(t, err)
	assert.Equal(t, payment.GatewayDeclined, st.State)
	assert.Equal(t, pgsim.CodeDoNotHonor, st.DeclineCode)

	// The same seed makes the same choices.
	outcomes := func() []bool {
		s := newSim(t, pgsim.WithDeclineRate(0.5), pgsim.WithSeed(42))
		var out []bool
		for i := range 32 {
			_, err := s.Approve(ctx, approve(fmt.Sprint(i)))
			out = append(out, err == nil)
		}
		return out
	}
	first := outcomes()
	assert.Equal(t, first, outcomes())
	assert.Contains(t, first, true)
	assert.Contains(t, first, false)
}

func TestSimulatorFaults(t *testing.T) {
	for _, tc := range []struct {
		fault     pgsim.Fault
		processed bool
		want      error
	}{
		{pgsim.FaultUnavailable, false, payment.ErrGatewayUnavailable},
		{pgsim.FaultError, false, payment.ErrOutcomeUnknown},
		{pgsim.FaultTimeout, false, context.DeadlineExceeded},
		{pgsim.FaultSlow, true, context.DeadlineExceeded},
		{pgsim.FaultLostResponse, true, payment.ErrOutcomeUnknown},
	} {
		t.Run(tc.fault.String(), func(t *testing.T) {
			sim := newSim(t)
			sim.InjectFault("p", tc.fault, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			_, err := sim.Approve(ctx, approve("p"))
			require.ErrorIs(t, err, tc.want)
			assert.False(t, errors.Is(err, payment.ErrDeclined))
			_, serr := sim.Status(context.Background(), "p")
			if tc.processed {
				assert.NoError(t, serr)
				assert.Equal(t, 1, sim.Charges("p"))
			} else {
				assert.ErrorIs(t, serr, payment.ErrNotAtGateway)
				assert.Zero(t, sim.Charges("p"))
			}
			// The fault was for one call only.
			_, err = sim.Approve(context.Background(), approve("p"))
			require.NoError(t, err)
			assert.Equal(t, 1, sim.Charges("p"))
		})
	}

	t.Run("global", func(t *testing.T) {
		sim := newSim(t)
		sim.SetFault(pgsim.FaultUnavailable)
		ctx := context.Background()
		_, err := sim.Approve(ctx, approve("p"))
		assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		_, err = sim.Status(ctx, "p")
		assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		_, err = sim.Cancel(ctx, payment.CancelRequest{CancelID: "c", PaymentID: "p", Amount: 1})
		assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
		sim.SetFault(pgsim.FaultNone)
		_, err = sim.Approve(ctx, approve("p"))
		assert.NoError(t, err)
	})

	t.Run("rate", func(t *testing.T) {
		sim := newSim(t, pgsim.WithFaultRate(pgsim.FaultUnavailable, 1))
		_, err := sim.Approve(context.Background(), approve("p"))
		assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
	})

	t.Run("close releases hanging calls", func(t *testing.T) {
		sim := testkit.Must(pgsim.New())(t)
		sim.SetFault(pgsim.FaultTimeout)
		done := make(chan error)
		go func() {
			_, err := sim.Approve(context.Background(), approve("p"))
			done <- err
		}()
		for sim.InFlight() == 0 {
			time.Sleep(time.Millisecond)
		}
		sim.Close()
		assert.Error(t, <-done)
	})
}

func TestSimulatorLatency(t *testing.T) {
	sim := newSim(t, pgsim.WithLatency(time.Hour, time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for sim.InFlight() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err := sim.Approve(ctx, approve("p"))
	assert.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, sim.Charges("p"), "cut short during the latency: not processed")
}

func TestSimulatorCancel(t *testing.T) {
	ctx := context.Background()
	sim := newSim(t)
	_, err := sim.Approve(ctx, approve("p"))
	require.NoError(t, err)
	c1, err := sim.Cancel(ctx, payment.CancelRequest{CancelID: "c-1", PaymentID: "p", Amount: 4000})
	require.NoError(t, err)
	again, err := sim.Cancel(ctx, payment.CancelRequest{CancelID: "c-1", PaymentID: "p", Amount: 4000})
	require.NoError(t, err)
	assert.Equal(t, c1, again)
	_, err = sim.Cancel(ctx, payment.CancelRequest{CancelID: "c-1", PaymentID: "p", Amount: 1})
	assert.Equal(t, pgsim.CodeIdempotencyConflict, declineCode(t, err))

	_, err = sim.Cancel(ctx, payment.CancelRequest{CancelID: "c-2", PaymentID: "p", Amount: 6001})
	assert.Equal(t, pgsim.CodeExceedsRemaining, declineCode(t, err))
	_, err = sim.Cancel(ctx, payment.CancelRequest{CancelID: "c-3", PaymentID: "p", Amount: 6000})
	require.NoError(t, err)
	_, err = sim.Cancel(ctx, payment.CancelRequest{CancelID: "c-4", PaymentID: "nope", Amount: 1})
	assert.Equal(t, pgsim.CodeNotCancelable, declineCode(t, err))

	st, err := sim.Status(ctx, "p")
	require.NoError(t, err)
	assert.Equal(t, int64(10_000), st.Canceled)
	s := sim.Stats()
	assert.Equal(t, 2, s.Cancels)
	assert.Equal(t, int64(10_000), s.CanceledAmount)
	assert.Equal(t, 6, s.CancelCalls)
}

func TestWebhookSignature(t *testing.T) {
	ctx := context.Background()
	sim := newSim(t, pgsim.WithWebhookSecret([]byte("s3cret")))
	_, err := sim.Approve(ctx, approve("p"))
	require.NoError(t, err)
	body, sig, err := sim.Webhook("p")
	require.NoError(t, err)

	ev, err := sim.WebhookVerifier().VerifyWebhook(body, sig)
	require.NoError(t, err)
	assert.Equal(t, payment.EventApproved, ev.Kind)
	assert.Equal(t, "p", ev.PaymentID)
	assert.Equal(t, int64(10_000), ev.Amount)
	assert.NotEmpty(t, ev.Reference)

	_, err = pgsim.NewWebhookVerifier([]byte("other")).VerifyWebhook(body, sig)
	assert.ErrorIs(t, err, payment.ErrInvalidWebhook)
	_, err = sim.WebhookVerifier().VerifyWebhook(append(body, ' '), sig)
	assert.ErrorIs(t, err, payment.ErrInvalidWebhook)
	garbage := []byte("not json")
	_, err = sim.WebhookVerifier().VerifyWebhook(garbage, pgsim.Sign([]byte("s3cret"), garbage))
	assert.ErrorIs(t, err, payment.ErrInvalidWebhook)

	_, _, err = sim.Webhook("nope")
	assert.ErrorIs(t, err, payment.ErrNotAtGateway)
	_, _, err = sim.CancelWebhook("nope")
	assert.Error(t, err)
}

// TestConstructorsRefuseBadOptions: every invalid option value of New and NewClient is
// refused, naming the option.
func TestConstructorsRefuseBadOptions(t *testing.T) {
	deliver := func(context.Context, []byte, string) error { return nil }
	testkit.RefusesBadOptions(t, pgsim.New, map[string]pgsim.Option{
		"WithLatency: -1ms..1s":       pgsim.WithLatency(-time.Millisecond, time.Second),
		"WithLatency: 2s..1s":         pgsim.WithLatency(2*time.Second, time.Second),
		"WithDeclineRate: 1.5":        pgsim.WithDeclineRate(1.5),
		"WithDeclineRate: -0.1":       pgsim.WithDeclineRate(-0.1),
		"WithFaultRate: 2 of":         pgsim.WithFaultRate(pgsim.FaultUnavailable, 2),
		"WithFaultRate: 0.5 of":       pgsim.WithFaultRate(pgsim.FaultNone, 0.5),
		"WithWebhookSecret: an empty": pgsim.WithWebhookSecret(nil),
		"WithWebhook: 0 attempts":     pgsim.WithWebhook(deliver, 0),
		"WithWebhook: 3 attempts":     pgsim.WithWebhook(nil, 3),
		"WithClock: nil":              pgsim.WithClock(nil),
		"WithLogger: nil":             pgsim.WithLogger(nil),
		"WithKeyRetention: 0s":        pgsim.WithKeyRetention(0),
	})
	testkit.RefusesBadOptions(t, func(opts ...pgsim.ClientOption) (*pgsim.Client, error) {
		return pgsim.NewClient("http://127.0.0.1:1", opts...)
	}, map[string]pgsim.ClientOption{"WithHTTPClient: nil": pgsim.WithHTTPClient(nil)})
}
