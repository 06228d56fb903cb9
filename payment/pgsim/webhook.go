package pgsim

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/commercekit/commercekit/payment"
)

// DefaultWebhookSecret signs webhooks unless WithWebhookSecret says otherwise. The simulator
// is for tests and demos; a real secret comes from the PG's console.
const DefaultWebhookSecret = "pgsim-webhook-secret"

// SignatureHeader is the HTTP header carrying a webhook's signature.
const SignatureHeader = "PGSim-Signature"

// event is a webhook's body on the wire.
type event struct {
	Type            string    `json:"type"`
	PaymentID       string    `json:"payment_id"`
	Amount          int64     `json:"amount"`
	Currency        string    `json:"currency"`
	Reference       string    `json:"reference,omitempty"`
	DeclineCode     string    `json:"decline_code,omitempty"`
	DeclineMessage  string    `json:"decline_message,omitempty"`
	CancelID        string    `json:"cancel_id,omitempty"`
	CancelAmount    int64     `json:"cancel_amount,omitempty"`
	CancelReference string    `json:"cancel_reference,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
}

func (c *charge) event() event {
	e := event{Type: string(payment.EventApproved), PaymentID: c.req.PaymentID, Amount: c.req.Amount,
		Currency: c.req.Currency, Reference: c.ref}
	if c.declined != nil {
		e.Type, e.DeclineCode, e.DeclineMessage = string(payment.EventDeclined), c.declined.Code, c.declined.Message
	}
	return e
}

func cancelEvent(p *charge, c *cancellation) event {
	return event{Type: string(payment.EventCanceled), PaymentID: p.req.PaymentID, Amount: p.req.Amount,
		Currency: p.req.Currency, Reference: p.ref, CancelID: c.req.CancelID, CancelAmount: c.req.Amount,
		CancelReference: c.ref}
}

// Sign returns the signature of a webhook body: "v1=" and the hex HMAC-SHA256 of body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

// WebhookVerifier checks and decodes the simulator's webhooks; it implements
// payment.WebhookVerifier.
type WebhookVerifier struct {
	secret []byte
}

var _ payment.WebhookVerifier = (*WebhookVerifier)(nil)

// NewWebhookVerifier returns a verifier for webhooks signed with secret.
func NewWebhookVerifier(secret []byte) *WebhookVerifier {
	return &WebhookVerifier{secret: append([]byte(nil), secret...)}
}

// WebhookVerifier returns a verifier for the simulator's own webhooks.
func (s *Simulator) WebhookVerifier() *WebhookVerifier { return NewWebhookVerifier(s.secret) }

// VerifyWebhook checks body's signature in constant time and decodes it. Every error matches
// payment.ErrInvalidWebhook.
func (v *WebhookVerifier) VerifyWebhook(body []byte, signature string) (payment.WebhookEvent, error) {
	got, ok := strings.CutPrefix(signature, "v1=")
	want := Sign(v.secret, body)[len("v1="):]
	if !ok || !hmac.Equal([]byte(got), []byte(want)) {
		return payment.WebhookEvent{}, fmt.Errorf("%w: bad signature", payment.ErrInvalidWebhook)
	}
	var e event
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return payment.WebhookEvent{}, fmt.Errorf("%w: %v", payment.ErrInvalidWebhook, err)
	}
	return payment.WebhookEvent{
		Kind: payment.EventKind(e.Type), PaymentID: e.PaymentID, Amount: e.Amount, Currency: e.Currency,
		Reference: e.Reference, DeclineCode: e.DeclineCode, DeclineMessage: e.DeclineMessage,
		CancelID: e.CancelID, CancelAmount: e.CancelAmount, CancelReference: e.CancelReference,
	}, nil
}

// encode returns e's body and signature.
func (s *Simulator) encode(e event) ([]byte, string) {
	e.CreatedAt = s.clock().UTC()
	body, _ := json.Marshal(e) // cannot fail: plain fields
	return body, Sign(s.secret, body)
}

// Webhook returns the signed webhook announcing the payment's outcome (approved or declined)
// as the simulator would deliver it, or payment.ErrNotAtGateway: for tests that deliver it
// themselves, late, twice, or racing something else.
func (s *Simulator) Webhook(paymentID string) (body []byte, signature string, err error) {
	s.mu.Lock()
	c, ok := s.payments[paymentID]
	var e event
	if ok {
		e = c.event()
	}
	s.mu.Unlock()
	if !ok {
		return nil, "", fmt.Errorf("pgsim: %w: %q", payment.ErrNotAtGateway, paymentID)
	}
	body, signature = s.encode(e)
	return body, signature, nil
}

// CancelWebhook returns the signed webhook announcing a succeeded refund, or an error if the
// simulator executed no cancel with the ID.
func (s *Simulator) CancelWebhook(cancelID string) (body []byte, signature string, err error) {
	s.mu.Lock()
	c, ok := s.cancels[cancelID]
	var e event
	if ok && c.declined == nil {
		e = cancelEvent(s.payments[c.req.PaymentID], c)
	}
	s.mu.Unlock()
	if !ok || c.declined != nil {
		return nil, "", fmt.Errorf("pgsim: no executed cancel %q", cancelID)
	}
	body, signature = s.encode(e)
	return body, signature, nil
}

// notify delivers e in the background if WithWebhook was given. s.mu is held.
func (s *Simulator) notify(e event) {
	if s.deliver == nil {
		return
	}
	select {
	case <-s.closed: // Close holds s.mu to close it, so no delivery starts after Close
		return
	default:
	}
	body, sig := s.encode(e)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-s.closed:
				cancel()
			case <-ctx.Done():
			}
		}()
		pause := 50 * time.Millisecond
		for attempt := 1; ; attempt++ {
			err := s.deliver(ctx, body, sig)
			if err == nil {
				return
			}
			if attempt >= s.deliveryAttempts {
				s.logger.Warn("pgsim: webhook not delivered", "type", e.Type, "payment", e.PaymentID, "err", err)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
				pause *= 2
			}
		}
	}()
}

// PostWebhook returns a deliver function for WithWebhook that POSTs each webhook to url, a
// loopback address (the simulator talks to local test servers only), with the signature in
// SignatureHeader. Any status but 2xx is an error, and so retried.
func PostWebhook(url string, client *http.Client) (func(ctx context.Context, body []byte, signature string) error, error) {
	if err := requireLoopback(url); err != nil {
		return nil, err
	}
	if client == nil {
		client = http.DefaultClient
	}
	return func(ctx context.Context, body []byte, signature string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(SignatureHeader, signature)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("pgsim: webhook answered %s", resp.Status)
		}
		return nil
	}, nil
}
