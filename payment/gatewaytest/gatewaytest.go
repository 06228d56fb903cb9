// Package gatewaytest is the conformance suite of payment.Gateway: what the payment Service,
// its Reconciler and the resilient package rely on a PG adapter to do. An adapter is done
// when Run passes against it:
//
//	func TestConformance(t *testing.T) {
//		sim, err := pgsim.New()
//		require.NoError(t, err)
//		t.Cleanup(sim.Close)
//		gatewaytest.Run(t, gatewaytest.Harness{Gateway: sim, DeclineToken: pgsim.TokenDecline, Charges: sim.Charges})
//	}
//
// The suite checks that Approve and Cancel are idempotent on their IDs (the same request
// twice has the effect of one, even when sent concurrently), that a decline is a
// *payment.DeclineError, and that Status reports the PG's own record (outcome, amount,
// currency, reference, refunded total), or payment.ErrNotAtGateway for a payment it never saw:
// Status is what webhooks, the reconciler and the audit confirm everything with.
package gatewaytest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/payment"
)

// Harness is the gateway under test and what the suite needs to know about it.
type Harness struct {
	// Gateway is the adapter under test. It must approve any token but DeclineToken.
	Gateway payment.Gateway
	// DeclineToken is a card token the PG declines.
	DeclineToken string
	// Charges, if set, returns how many times the PG took money for a payment, so the suite
	// can prove that a repeated or concurrent Approve charges once. Leave it nil for a PG
	// that cannot tell.
	Charges func(paymentID string) int
}

// Run runs the suite against h.Gateway. Every subtest uses payment IDs of its own, so one
// gateway may serve all of them, and Run may be called more than once on it.
func Run(t *testing.T, h Harness) {
	t.Helper()
	require.NotNil(t, h.Gateway, "gatewaytest: Harness.Gateway is required")
	require.NotEmpty(t, h.DeclineToken, "gatewaytest: Harness.DeclineToken is required")
	t.Run("ApproveIsIdempotent", func(t *testing.T) { approveIsIdempotent(t, h) })
	t.Run("ConcurrentApprovesChargeOnce", func(t *testing.T) { concurrentApproves(t, h) })
	t.Run("Decline", func(t *testing.T) { decline(t, h) })
	t.Run("StatusOfUnknownPayment", func(t *testing.T) { statusUnknown(t, h) })
	t.Run("CancelIsIdempotent", func(t *testing.T) { cancelIsIdempotent(t, h) })
	t.Run("CancelBeyondAmountIsDeclined", func(t *testing.T) { cancelBeyond(t, h) })
}

// newID returns a payment or cancel ID no other run uses.
func newID(prefix string) string { return prefix + "-" + uuid.NewString() }

func approveReq(id, token string) payment.ApproveRequest {
	return payment.ApproveRequest{PaymentID: id, OrderID: "order-" + id, Amount: 12_000, Currency: "KRW",
		Method: payment.MethodCard, Token: token}
}

func charges(h Harness, id string, want int) func(t *testing.T) {
	return func(t *testing.T) {
		if h.Charges != nil {
			assert.Equal(t, want, h.Charges(id), "charges of %s", id)
		}
	}
}

func approveIsIdempotent(t *testing.T, h Harness) {
	ctx := context.Background()
	req := approveReq(newID("gt-approve"), "tok_ok")
	a, err := h.Gateway.Approve(ctx, req)
	require.NoError(t, err)
	require.NotEmpty(t, a.Reference)
	again, err := h.Gateway.Approve(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, a, again, "a repeated Approve returns the first answer")
	charges(h, req.PaymentID, 1)(t)

	st, err := h.Gateway.Status(ctx, req.PaymentID)
	require.NoError(t, err)
	assert.Empty(t, st.Cancels, "no refunds: an empty list, or none for a PG that does not list them")
	st.Cancels = nil
	assert.Equal(t, payment.GatewayPayment{PaymentID: req.PaymentID, State: payment.GatewayApproved,
		Amount: req.Amount, Currency: req.Currency, Reference: a.Reference}, st)
}

func concurrentApproves(t *testing.T, h Harness) {
	ctx := context.Background()
	req := approveReq(newID("gt-race"), "tok_ok")
	const n = 16
	refs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a, err := h.Gateway.Approve(ctx, req)
			refs[i], errs[i] = a.Reference, err
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		assert.Equal(t, refs[0], refs[i], "every concurrent Approve gets the same answer")
	}
	charges(h, req.PaymentID, 1)(t)
}

func decline(t *testing.T, h Harness) {
	ctx := context.Background()
	req := approveReq(newID("gt-decline"), h.DeclineToken)
	_, err := h.Gateway.Approve(ctx, req)
	require.ErrorIs(t, err, payment.ErrDeclined)
	var d *payment.DeclineError
	require.True(t, errors.As(err, &d), "a decline is a *payment.DeclineError: %v", err)
	assert.NotEmpty(t, d.Code)
	_, err = h.Gateway.Approve(ctx, req)
	assert.ErrorIs(t, err, payment.ErrDeclined, "a repeated Approve returns the first answer")
	charges(h, req.PaymentID, 0)(t)

	st, err := h.Gateway.Status(ctx, req.PaymentID)
	require.NoError(t, err)
	assert.Equal(t, payment.GatewayDeclined, st.State)
	assert.Equal(t, d.Code, st.DeclineCode)
	assert.Equal(t, req.Amount, st.Amount)
	assert.Equal(t, req.Currency, st.Currency)
	assert.Empty(t, st.Reference)

	_, err = h.Gateway.Cancel(ctx, payment.CancelRequest{CancelID: newID("gt-cancel"), PaymentID: req.PaymentID, Amount: 1})
	assert.ErrorIs(t, err, payment.ErrDeclined, "a declined payment cannot be refunded")
}

func statusUnknown(t *testing.T, h Harness) {
	_, err := h.Gateway.Status(context.Background(), newID("gt-never-seen"))
	assert.ErrorIs(t, err, payment.ErrNotAtGateway)
}

func cancelIsIdempotent(t *testing.T, h Harness) {
	ctx := context.Background()
	req := approveReq(newID("gt-refund"), "tok_ok")
	_, err := h.Gateway.Approve(ctx, req)
	require.NoError(t, err)
	cr := payment.CancelRequest{CancelID: newID("gt-cancel"), PaymentID: req.PaymentID, Amount: 2_000, Reason: "gatewaytest"}
	c, err := h.Gateway.Cancel(ctx, cr)
	require.NoError(t, err)
	require.NotEmpty(t, c.Reference)
	for range 2 {
		again, err := h.Gateway.Cancel(ctx, cr)
		require.NoError(t, err)
		assert.Equal(t, c, again, "a repeated Cancel returns the first answer")
	}
	st, err := h.Gateway.Status(ctx, req.PaymentID)
	require.NoError(t, err)
	assert.Equal(t, payment.GatewayApproved, st.State)
	assert.Equal(t, cr.Amount, st.Canceled, "refunded once")

	rest := payment.CancelRequest{CancelID: newID("gt-cancel"), PaymentID: req.PaymentID, Amount: req.Amount - cr.Amount}
	_, err = h.Gateway.Cancel(ctx, rest)
	require.NoError(t, err)
	st, err = h.Gateway.Status(ctx, req.PaymentID)
	require.NoError(t, err)
	assert.Equal(t, req.Amount, st.Canceled, fmt.Sprintf("refunded in full: %+v", st))
}

func cancelBeyond(t *testing.T, h Harness) {
	ctx := context.Background()
	req := approveReq(newID("gt-beyond"), "tok_ok")
	_, err := h.Gateway.Approve(ctx, req)
	require.NoError(t, err)
	_, err = h.Gateway.Cancel(ctx, payment.CancelRequest{CancelID: newID("gt-cancel"), PaymentID: req.PaymentID, Amount: req.Amount + 1})
	assert.ErrorIs(t, err, payment.ErrDeclined)
	st, err := h.Gateway.Status(ctx, req.PaymentID)
	require.NoError(t, err)
	assert.Zero(t, st.Canceled, "nothing refunded")
}
