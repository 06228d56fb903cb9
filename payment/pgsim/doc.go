// Package pgsim is a payment gateway simulator: the PG of commercekit's tests and demos.
//
// A Simulator implements payment.Gateway in process. Like a real PG it is idempotent per
// payment ID (Approve) and per cancel ID (Cancel): the same request twice gets the first
// answer and never a second charge. It can be told to misbehave:
//
//   - latency (WithLatency), random declines (WithDeclineRate) and random faults
//     (WithFaultRate), reproducible with WithSeed;
//   - deterministic declines by card token (TokenDecline, TokenInsufficientFunds);
//   - faults for every call (SetFault: the PG is down) or for the next calls with one
//     idempotency key (InjectFault): 503 before processing, 500, a hang before processing, a
//     hang after processing (a timeout after the charge), and "approved but the response was
//     lost".
//
// Status lists the refunds of a payment with the cancel ID each was made under
// (payment.GatewayPayment.Cancels), as payment.Gateway asks; a refund made by calling
// Cancel directly, with an ID the Service never used, plays one made in the PG's console.
//
// It counts what it did (Stats, Charges, ApproveCalls), so tests can assert that a payment
// was charged exactly once, and it signs webhooks with HMAC-SHA256 (Sign, WebhookVerifier),
// delivering them through WithWebhook or handing them to a test (Webhook, CancelWebhook).
//
// NewHandler serves a Simulator over HTTP (httptest.NewServer in tests; loopback only), and
// Client is the payment.Gateway adapter for that API, mapping HTTP answers and transport
// failures to payment's errors as an adapter for a real PG would.
package pgsim
