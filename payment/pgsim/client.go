package pgsim

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/payment"
)

// Client is the HTTP adapter for a simulator served by NewHandler: a payment.Gateway that
// speaks the simulator's HTTP API, the way an adapter for a real PG would. It sends the
// payment ID (or cancel ID) as the Idempotency-Key of every POST, and maps answers to
// payment errors: 402 is a *payment.DeclineError, the simulator's own 404 (code NOT_FOUND;
// any other 404 is a proxy's or a wrong route's) payment.ErrNotAtGateway, 503 and a
// refused connection payment.ErrGatewayUnavailable, and everything else that is not a 200
// with a valid body (500, a reset connection, a timeout) payment.ErrOutcomeUnknown.
//
// Because POSTs carry an Idempotency-Key, net/http may itself resend one whose reused
// keep-alive connection broke before the answer; the PG's idempotency makes that safe.
type Client struct {
	base string
	hc   *http.Client
}

var _ payment.Gateway = (*Client)(nil)

// ClientOption configures a Client.
type ClientOption func(*clientSettings)

// clientSettings is what the options of NewClient fill.
type clientSettings struct {
	option.Errors
	*Client
}

// WithHTTPClient sets the HTTP client (default: a new one with its own transport). Leave
// timeouts to the context, or to the resilient package's per-attempt timeout. It must not be
// nil.
func WithHTTPClient(hc *http.Client) ClientOption {
	return func(c *clientSettings) { option.NotNil(&c.Errors, &c.hc, "WithHTTPClient", hc) }
}

// NewClient returns a Client for the simulator at baseURL, which must be a loopback address
// (e.g. an httptest.Server's URL).
func NewClient(baseURL string, opts ...ClientOption) (*Client, error) {
	if err := requireLoopback(baseURL); err != nil {
		return nil, err
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), hc: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}}
	set := clientSettings{Client: c}
	if err := option.Apply(&set, opts); err != nil {
		return nil, fmt.Errorf("pgsim: %w", err)
	}
	return c, nil
}

// Approve calls POST /v1/payments/{id}/approve.
func (c *Client) Approve(ctx context.Context, req payment.ApproveRequest) (payment.Approval, error) {
	var out resultBody
	err := c.do(ctx, http.MethodPost, "/v1/payments/"+url.PathEscape(req.PaymentID)+"/approve", req.PaymentID,
		approveBody{OrderID: req.OrderID, Amount: req.Amount, Currency: req.Currency, Method: string(req.Method), Token: req.Token}, &out)
	return payment.Approval{Reference: out.Reference}, err
}

// Cancel calls POST /v1/cancels/{id}.
func (c *Client) Cancel(ctx context.Context, req payment.CancelRequest) (payment.Cancellation, error) {
	var out resultBody
	err := c.do(ctx, http.MethodPost, "/v1/cancels/"+url.PathEscape(req.CancelID), req.CancelID,
		cancelBody{PaymentID: req.PaymentID, Amount: req.Amount, Reason: req.Reason}, &out)
	return payment.Cancellation{Reference: out.Reference}, err
}

// Status calls GET /v1/payments/{id}.
func (c *Client) Status(ctx context.Context, paymentID string) (payment.GatewayPayment, error) {
	var out statusBody
	if err := c.do(ctx, http.MethodGet, "/v1/payments/"+url.PathEscape(paymentID), "", nil, &out); err != nil {
		return payment.GatewayPayment{}, err
	}
	gp := payment.GatewayPayment{
		PaymentID: out.PaymentID, State: payment.GatewayState(out.State), Amount: out.Amount, Currency: out.Currency,
		Reference: out.Reference, DeclineCode: out.DeclineCode, DeclineMessage: out.DeclineMessage, Canceled: out.Canceled,
	}
	if out.Cancels != nil { // a list, even an empty one: the PG lists its refunds
		gp.Cancels = make([]payment.GatewayCancel, 0, len(out.Cancels))
	}
	for _, c := range out.Cancels {
		gp.Cancels = append(gp.Cancels, payment.GatewayCancel{CancelID: c.CancelID, Amount: c.Amount, Reference: c.Reference})
	}
	return gp, nil
}

func (c *Client) do(ctx context.Context, method, path, key string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("pgsim client: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("pgsim client: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(IdempotencyKeyHeader, key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("pgsim client: %w: %w", payment.ErrGatewayUnavailable, err)
		}
		return fmt.Errorf("pgsim client: %w: %w", payment.ErrOutcomeUnknown, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return fmt.Errorf("pgsim client: %w: reading the answer: %w", payment.ErrOutcomeUnknown, err)
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("pgsim client: %w: bad answer: %w", payment.ErrOutcomeUnknown, err)
		}
		return nil
	}
	var e errorBody
	_ = json.Unmarshal(raw, &e)
	switch resp.StatusCode {
	case http.StatusPaymentRequired, http.StatusBadRequest:
		return &payment.DeclineError{Code: cmp.Or(e.Code, CodeInvalidRequest), Message: e.Message}
	case http.StatusNotFound:
		if e.Code == codeNotFound {
			return fmt.Errorf("pgsim client: %w: %s", payment.ErrNotAtGateway, e.Message)
		}
		// Not the simulator's answer (a proxy's, a wrong route's): it says nothing of the
		// payment, and taking it for "never seen" would have the payment sent again.
	case http.StatusServiceUnavailable:
		return fmt.Errorf("pgsim client: %w: %s", payment.ErrGatewayUnavailable, resp.Status)
	}
	return fmt.Errorf("pgsim client: %w: %s %s", payment.ErrOutcomeUnknown, resp.Status, e.Message)
}
