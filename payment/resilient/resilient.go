package resilient

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/failsafe-go/failsafe-go/timeout"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/payment"
)

// Errors that say which policy refused a call. Each comes wrapped with the payment error
// it means (ErrGatewayUnavailable or ErrOutcomeUnknown), so callers need only those.
var (
	// ErrBreakerOpen: the circuit breaker is open; the call was not made.
	ErrBreakerOpen = errors.New("resilient: circuit breaker open")
	// ErrBulkheadFull: too many calls in flight; the call was not made.
	ErrBulkheadFull = errors.New("resilient: bulkhead full")
	// ErrAttemptTimeout: an attempt outlived the per-attempt timeout.
	ErrAttemptTimeout = errors.New("resilient: attempt timed out")
)

// Gateway is a payment.Gateway whose calls go through failsafe-go policies, outermost first:
// retry, bulkhead, circuit breaker, per-attempt timeout. It is safe for concurrent use; make
// one per PG so that each has its own breaker and bulkhead.
type Gateway struct {
	gw       payment.Gateway
	retrying failsafe.Executor[any]
	once     failsafe.Executor[any]
	breaker  circuitbreaker.CircuitBreaker[any]
}

var (
	_ payment.Gateway   = (*Gateway)(nil)
	_ payment.Readiness = (*Gateway)(nil)
)

// Wrap returns gw behind the policies configured by opts (see the With functions for the
// defaults). An option given an invalid value is refused with an *errcode.InvalidError
// naming it, and no Gateway.
func Wrap(gw payment.Gateway, opts ...Option) (*Gateway, error) {
	c := defaults()
	if err := option.Apply(&c, opts); err != nil {
		return nil, fmt.Errorf("resilient: %w", err)
	}
	breaker := circuitbreaker.NewBuilder[any]().
		HandleIf(func(_ any, err error) bool { return failure(err) }).
		WithFailureThresholdRatio(c.breakerFailures, c.breakerWindow).
		WithSuccessThreshold(c.halfOpenSuccesses).
		WithDelay(c.breakerDelay).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
			from, to := stateOf(e.OldState), stateOf(e.NewState)
			c.logger.Warn("resilient: circuit breaker changed state", "from", from, "to", to)
			c.observer.Observe(stateChanged(from, to))
		}).
		Build()
	bh := bulkhead.NewBuilder[any](c.maxConcurrent).WithMaxWaitTime(c.maxWait).Build()
	to := timeout.New[any](c.attemptTimeout)
	retry := retrypolicy.NewBuilder[any]().
		HandleIf(func(_ any, err error) bool { return retryable(err) }).
		WithMaxAttempts(c.maxAttempts).
		WithBackoff(c.backoff, c.maxBackoff).
		WithJitterFactor(c.jitter).
		ReturnLastFailure().
		Build()
	return &Gateway{
		gw:       gw,
		retrying: failsafe.With[any](retry, bh, breaker, to),
		once:     failsafe.With[any](bh, breaker, to),
		breaker:  breaker,
	}, nil
}

// Approve approves through the policies, retrying with the same payment ID.
func (g *Gateway) Approve(ctx context.Context, req payment.ApproveRequest) (payment.Approval, error) {
	return Retry(ctx, g, PaymentKey(req.PaymentID), func(ctx context.Context, k Key) (payment.Approval, error) {
		req.PaymentID = k.id
		return g.gw.Approve(ctx, req)
	})
}

// Cancel refunds through the policies, retrying with the same cancel (refund) ID.
func (g *Gateway) Cancel(ctx context.Context, req payment.CancelRequest) (payment.Cancellation, error) {
	return Retry(ctx, g, CancelKey(req.CancelID), func(ctx context.Context, k Key) (payment.Cancellation, error) {
		req.CancelID = k.id
		return g.gw.Cancel(ctx, req)
	})
}

// Status reads through the policies; a read is retried as it changes nothing.
func (g *Gateway) Status(ctx context.Context, paymentID string) (payment.GatewayPayment, error) {
	return Retry(ctx, g, PaymentKey(paymentID), func(ctx context.Context, k Key) (payment.GatewayPayment, error) {
		return g.gw.Status(ctx, k.id)
	})
}

// Ready returns nil unless the circuit breaker is open with some of its delay left; then an
// *errcode.UnavailableError of "pg" whose RetryAfter is that remaining delay, matching
// payment.ErrGatewayUnavailable and ErrBreakerOpen. It calls nothing: a caller asks it
// before recording a payment, to answer at once that the PG is down (payment.Readiness).
func (g *Gateway) Ready() error {
	if !g.breaker.IsOpen() {
		return nil
	}
	wait := g.breaker.RemainingDelay()
	if wait <= 0 {
		return nil // the next call is a half-open trial
	}
	return &errcode.UnavailableError{Dependency: "pg", RetryAfter: wait,
		Err: fmt.Errorf("%w: %w", payment.ErrGatewayUnavailable, ErrBreakerOpen)}
}

// BreakerState returns the circuit breaker's state.
func (g *Gateway) BreakerState() BreakerState { return stateOf(g.breaker.State()) }

// Key is an idempotency key: the ID the PG deduplicates a call on, so that making the call
// twice has the effect of making it once. It can only be made from a payment ID or a cancel
// (refund) ID, and Retry hands it to the call, which must send it to the PG: a call that has
// no such key cannot be retried by mistake.
type Key struct {
	kind, id string
}

// PaymentKey is the key of calls about one payment (approve, status).
func PaymentKey(paymentID string) Key { return Key{kind: "payment", id: paymentID} }

// CancelKey is the key of one cancellation (refund).
func CancelKey(cancelID string) Key { return Key{kind: "cancel", id: cancelID} }

// String returns the ID the PG receives.
func (k Key) String() string { return k.id }

// Retry runs call through all of g's policies, retrying it with the same key while it fails
// with an error that may pass (ErrGatewayUnavailable, ErrOutcomeUnknown, a timeout), never
// after a decline. call must send key to the PG as its idempotency key.
func Retry[R any](ctx context.Context, g *Gateway, key Key, call func(ctx context.Context, key Key) (R, error)) (R, error) {
	if key.id == "" {
		var zero R
		return zero, &payment.ValidationError{Field: key.kind + " ID", Reason: "is empty: no idempotency key, no retry"}
	}
	return run(ctx, g.retrying, func(ctx context.Context) (R, error) { return call(ctx, key) })
}

// Once runs call through g's bulkhead, breaker and timeout but never retries it: for PG calls
// that carry no idempotency key.
func Once[R any](ctx context.Context, g *Gateway, call func(ctx context.Context) (R, error)) (R, error) {
	return run(ctx, g.once, call)
}

func run[R any](ctx context.Context, exec failsafe.Executor[any], call func(ctx context.Context) (R, error)) (R, error) {
	var ambiguous atomic.Bool
	v, err := exec.WithContext(ctx).GetWithExecution(func(e failsafe.Execution[any]) (any, error) {
		r, err := call(e.Context())
		if mayHaveProcessed(err) {
			ambiguous.Store(true)
		}
		return r, err
	})
	r, _ := v.(R)
	return r, translate(err, ambiguous.Load())
}

// translate turns the policies' errors into payment errors. Once an attempt may have reached
// the PG, a later refusal by the breaker or bulkhead does not make the outcome known: the
// result is then ErrOutcomeUnknown.
func translate(err error, ambiguous bool) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, circuitbreaker.ErrOpen):
		err = fmt.Errorf("%w: %w", payment.ErrGatewayUnavailable, ErrBreakerOpen)
	case errors.Is(err, bulkhead.ErrFull):
		err = fmt.Errorf("%w: %w", payment.ErrGatewayUnavailable, ErrBulkheadFull)
	case errors.Is(err, timeout.ErrExceeded):
		return fmt.Errorf("%w: %w", payment.ErrOutcomeUnknown, ErrAttemptTimeout)
	}
	if ambiguous && !errors.Is(err, payment.ErrOutcomeUnknown) && !errors.Is(err, payment.ErrDeclined) &&
		!errors.Is(err, payment.ErrNotAtGateway) {
		return fmt.Errorf("%w: an earlier attempt may have reached the PG; last: %w", payment.ErrOutcomeUnknown, err)
	}
	return err
}

// definitive reports whether err is an answer from the PG (a decline, "no such payment").
func definitive(err error) bool {
	return errors.Is(err, payment.ErrDeclined) || errors.Is(err, payment.ErrNotAtGateway)
}

// mayHaveProcessed reports whether a call that returned err may have been processed by the
// PG without its answer reaching us.
func mayHaveProcessed(err error) bool {
	if err == nil || definitive(err) {
		return false
	}
	return errors.Is(err, payment.ErrOutcomeUnknown) || !errors.Is(err, payment.ErrGatewayUnavailable)
}

// retryable reports whether an attempt that failed with err is worth repeating with the same
// key. Never a decline; never the breaker's or bulkhead's refusal (retrying would only wait
// for the same refusal); never the caller's cancellation.
func retryable(err error) bool {
	switch {
	case err == nil, definitive(err), errors.Is(err, circuitbreaker.ErrOpen), errors.Is(err, bulkhead.ErrFull),
		errors.Is(err, context.Canceled):
		return false
	}
	return errors.Is(err, payment.ErrGatewayUnavailable) || errors.Is(err, payment.ErrOutcomeUnknown) ||
		errors.Is(err, timeout.ErrExceeded)
}

// failure reports whether an attempt's err counts against the PG's health: anything but an
// answer, or the caller's own cancellation.
func failure(err error) bool {
	return err != nil && !definitive(err) && !errors.Is(err, context.Canceled)
}
