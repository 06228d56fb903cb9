// Package resilient puts a payment.Gateway behind failsafe-go policies, configured per
// gateway (Wrap one per PG):
//
//   - a per-attempt timeout (WithAttemptTimeout, default 10s): an attempt that outlives it is
//     abandoned as payment.ErrOutcomeUnknown, since the PG may still have processed it;
//   - retries with exponential backoff and jitter (WithRetries, WithJitter; default 3 attempts,
//     100ms doubling to 2s, ±50%), only on errors that may pass (payment.ErrGatewayUnavailable,
//     payment.ErrOutcomeUnknown, a timeout) — never after a decline or "not found";
//   - a circuit breaker (WithBreaker, default: open once 5 of the last 10 calls failed, half-open
//     after 30s, closed after 3 trial successes): while open, calls fail at once with
//     payment.ErrGatewayUnavailable wrapping ErrBreakerOpen, and Ready (payment.Readiness)
//     says so without a call, with the breaker's remaining delay as the retry hint;
//   - a bulkhead (WithBulkhead, default 64 calls in flight, 1s wait) that refuses the excess with
//     payment.ErrGatewayUnavailable wrapping ErrBulkheadFull.
//
// Declines and "not found" are answers, not failures: they never trip the breaker, nor does the
// caller's cancellation or a full bulkhead.
//
// Only calls that carry an idempotency key are retried, and the API makes that hard to get
// wrong: Retry accepts only a Key, which only PaymentKey and CancelKey make, and hands it to the
// call, which sends it to the PG. Calls without one go through Once, which never retries.
// Gateway's own methods key Approve and Status on the payment ID and Cancel on the cancel ID.
//
// Once an attempt may have reached the PG, a later refusal does not make the outcome known: the
// call then fails with payment.ErrOutcomeUnknown, never payment.ErrGatewayUnavailable, so the
// payment is recorded UNKNOWN and reconciled rather than left for a fresh attempt.
//
// BenchmarkGateway measures the policies' overhead against the in-process simulator:
//
//	go test -run '^$' -bench BenchmarkGateway -benchtime 2s ./payment/resilient/
package resilient
