package pgsim_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/payment/resilient"
)

// serve runs sim behind an httptest server and returns a fresh Client for it.
func serve(t *testing.T, sim *pgsim.Simulator) (*httptest.Server, func() *pgsim.Client) {
	srv := httptest.NewServer(pgsim.NewHandler(sim))
	t.Cleanup(srv.Close)
	return srv, func() *pgsim.Client {
		c, err := pgsim.NewClient(srv.URL)
		require.NoError(t, err)
		return c
	}
}

func TestHTTPRoundTrip(t *testing.T) {
	ctx := context.Background()
	sim := newSim(t)
	_, client := serve(t, sim)
	c := client()

	a, err := c.Approve(ctx, approve("p/1")) // escaped in the path
	require.NoError(t, err)
	assert.NotEmpty(t, a.Reference)
	again, err := c.Approve(ctx, approve("p/1"))
	require.NoError(t, err)
	assert.Equal(t, a, again)
	assert.Equal(t, 1, sim.Charges("p/1"))

	declined := approve("d")
	declined.Token = pgsim.TokenDecline
	_, err = c.Approve(ctx, declined)
	assert.Equal(t, pgsim.CodeCardDeclined, declineCode(t, err))

	st, err := c.Status(ctx, "p/1")
	require.NoError(t, err)
	assert.Equal(t, payment.GatewayPayment{PaymentID: "p/1", State: payment.GatewayApproved, Amount: 10_000, Currency: "KRW", Reference: a.Reference,
		Cancels: []payment.GatewayCancel{}}, st, "the simulator lists its refunds, none")
	st, err = c.Status(ctx, "d")
	require.NoError(t, err)
	assert.Equal(t, payment.GatewayDeclined, st.State)
	_, err = c.Status(ctx, "nope")
	assert.ErrorIs(t, err, payment.ErrNotAtGateway)

	cn, err := c.Cancel(ctx, payment.CancelRequest{CancelID: "c-1", PaymentID: "p/1", Amount: 2500, Reason: "r"})
	require.NoError(t, err)
	assert.NotEmpty(t, cn.Reference)
	_, err = c.Cancel(ctx, payment.CancelRequest{CancelID: "c-2", PaymentID: "p/1", Amount: 9000})
	assert.Equal(t, pgsim.CodeExceedsRemaining, declineCode(t, err))
	st, err = c.Status(ctx, "p/1")
	require.NoError(t, err)
	assert.Equal(t, payment.GatewayPayment{PaymentID: "p/1", State: payment.GatewayApproved, Amount: 10_000, Currency: "KRW", Reference: a.Reference,
		Canceled: 2500, Cancels: []payment.GatewayCancel{{CancelID: "c-1", Amount: 2500, Reference: cn.Reference}}}, st,
		"the refunds made, by cancel ID (not the refused one)")

	bad := approve("bad")
	bad.Currency = ""
	_, err = c.Approve(ctx, bad)
	assert.Equal(t, pgsim.CodeInvalidRequest, declineCode(t, err))
}

func TestHTTPFaults(t *testing.T) {
	sim := newSim(t)
	srv, client := serve(t, sim)
	ctx := context.Background()

	sim.InjectFault("u", pgsim.FaultUnavailable, 1)
	_, err := client().Approve(ctx, approve("u"))
	assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)

	sim.InjectFault("e", pgsim.FaultError, 1)
	_, err = client().Approve(ctx, approve("e"))
	assert.ErrorIs(t, err, payment.ErrOutcomeUnknown)
	assert.Zero(t, sim.Charges("e"))

	// A fresh client, so net/http has no reused connection to replay the request on.
	sim.InjectFault("l", pgsim.FaultLostResponse, 1)
	_, err = client().Approve(ctx, approve("l"))
	assert.ErrorIs(t, err, payment.ErrOutcomeUnknown)
	assert.Equal(t, 1, sim.Charges("l"), "charged, though the answer was lost")

	sim.InjectFault("t", pgsim.FaultTimeout, 1)
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = client().Approve(tctx, approve("t"))
	assert.ErrorIs(t, err, payment.ErrOutcomeUnknown)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	sim.SetFault(pgsim.FaultUnavailable)
	_, err = client().Status(ctx, "l")
	assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
	sim.SetFault(pgsim.FaultNone)

	// Nobody listening: the request never left, so nothing can have been charged.
	c := client()
	srv.Close()
	_, err = c.Approve(ctx, approve("down"))
	assert.ErrorIs(t, err, payment.ErrGatewayUnavailable)
	assert.NotErrorIs(t, err, payment.ErrOutcomeUnknown)
}

// TestHTTPWithPolicies: over HTTP, a lost response is retried by the resilient gateway with
// the same key and the payment is approved, charged once.
func TestHTTPWithPolicies(t *testing.T) {
	sim := newSim(t)
	_, client := serve(t, sim)
	gw := testkit.Must(resilient.Wrap(client(), resilient.WithRetries(3, time.Millisecond, 5*time.Millisecond)))(t)
	sim.InjectFault("l", pgsim.FaultLostResponse, 1)
	a, err := gw.Approve(context.Background(), approve("l"))
	require.NoError(t, err)
	assert.NotEmpty(t, a.Reference)
	assert.Equal(t, 2, sim.ApproveCalls("l"))
	assert.Equal(t, 1, sim.Stats().Charges)
}

func TestHTTPRejectsMalformedRequests(t *testing.T) {
	srv, _ := serve(t, newSim(t))
	for _, tc := range []struct {
		name, body, key string
	}{
		{"not JSON", "{", ""},
		{"unknown field", `{"amount":1,"colour":"red"}`, ""},
		{"key differs from path", `{"amount":1}`, "other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/payments/p/approve", strings.NewReader(tc.body))
			require.NoError(t, err)
			if tc.key != "" {
				req.Header.Set(pgsim.IdempotencyKeyHeader, tc.key)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
		})
	}
}

func TestLoopbackOnly(t *testing.T) {
	_, err := pgsim.NewClient("http://pg.example.com")
	assert.Error(t, err)
	_, err = pgsim.NewClient("ftp://127.0.0.1")
	assert.Error(t, err)
	_, err = pgsim.PostWebhook("http://10.0.0.1/hook", nil)
	assert.Error(t, err)
	_, err = pgsim.NewClient("http://localhost:1")
	assert.NoError(t, err)
}

// TestWebhookDeliveryOverHTTP: the simulator POSTs signed webhooks, retrying a failed delivery.
func TestWebhookDeliveryOverHTTP(t *testing.T) {
	var (
		mu       sync.Mutex
		attempts int
		got      []payment.WebhookEvent
	)
	verifier := pgsim.NewWebhookVerifier([]byte(pgsim.DefaultWebhookSecret))
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts == 1 {
			w.WriteHeader(http.StatusInternalServerError) // the first delivery fails
			return
		}
		ev, err := verifier.VerifyWebhook(body, r.Header.Get(pgsim.SignatureHeader))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got = append(got, ev)
	}))
	defer receiver.Close()
	deliver, err := pgsim.PostWebhook(receiver.URL, receiver.Client())
	require.NoError(t, err)
	sim := testkit.Must(pgsim.New(pgsim.WithWebhook(deliver, 3)))(t)
	_, err = sim.Approve(context.Background(), approve("p"))
	require.NoError(t, err)
	_, err = sim.Cancel(context.Background(), payment.CancelRequest{CancelID: "c", PaymentID: "p", Amount: 10_000})
	require.NoError(t, err)

	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 2 {
			break
		}
		require.True(t, time.Now().Before(deadline), "webhooks not delivered")
		time.Sleep(5 * time.Millisecond)
	}
	sim.Close()
	kinds := map[payment.EventKind]payment.WebhookEvent{}
	for _, ev := range got {
		kinds[ev.Kind] = ev
	}
	assert.Equal(t, "p", kinds[payment.EventApproved].PaymentID)
	assert.Equal(t, "c", kinds[payment.EventCanceled].CancelID)
	assert.Equal(t, int64(10_000), kinds[payment.EventCanceled].CancelAmount)
	assert.Equal(t, 3, attempts)
}
