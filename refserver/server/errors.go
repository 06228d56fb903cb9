package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/refserver/member"
)

// errorRule maps the errors matching err (errors.Is) to a status and a stable code.
type errorRule struct {
	err    error
	status int
	code   string
	// retryAfter, in seconds, is sent for statuses a retry may cure.
	retryAfter int
}

// errorRules is the one table from domain errors to HTTP, first match wins. commerce wraps
// the leaf error it met together with its own sentinel, so commerce's sentinels come
// first; the leaves' follow for the calls that reach them directly. Statuses: 400 malformed
// input, 404 not found (also another user's order or coupon), 409 in progress or a state
// conflict, 413 body too large, 422 a rule violation or an idempotency key reused with
// another request, 503 a dependency down or a timeout.
//
// A dependency failure comes first: whatever else the error matches, it is not a business
// answer. The leaves and internal/sqlutil wrap transport errors as errcode.ErrUnavailable
// (through internal/depfail); a raw one that slipped through is caught after the table by
// the same classifier, so no handler needs logic of its own.
var errorRules = []errorRule{
	{errcode.ErrUnavailable, http.StatusServiceUnavailable, "dependency_unavailable", 1},

	// Request handling.
	{errMalformed, http.StatusBadRequest, "malformed_request", 0},
	{idempotency.ErrInvalid, http.StatusBadRequest, "invalid_idempotency_key", 0},
	{idempotency.ErrKeyReused, http.StatusUnprocessableEntity, "idempotency_key_reused", 0},
	{idempotency.ErrInProgress, http.StatusConflict, "request_in_progress", 1},
	{idempotency.ErrLockLost, http.StatusConflict, "request_in_progress", 1},

	// commerce.
	{commerce.ErrInvalidRequest, http.StatusBadRequest, "invalid_request", 0},
	{commerce.ErrIdempotencyConflict, http.StatusUnprocessableEntity, "idempotency_key_reused", 0},
	{commerce.ErrProductNotFound, http.StatusNotFound, "product_not_found", 0},
	{commerce.ErrOrderNotFound, http.StatusNotFound, "order_not_found", 0},
	{commerce.ErrTopUpNotFound, http.StatusNotFound, "top_up_not_found", 0},
	{commerce.ErrOutOfStock, http.StatusUnprocessableEntity, "out_of_stock", 0},
	{commerce.ErrBuyerLimit, http.StatusUnprocessableEntity, "buyer_limit_exceeded", 0},
	{commerce.ErrUnpaidLimit, http.StatusUnprocessableEntity, "unpaid_limit_reached", 0},
	{commerce.ErrCouponUnusable, http.StatusUnprocessableEntity, "coupon_unusable", 0},
	{commerce.ErrInsufficientPoints, http.StatusUnprocessableEntity, "insufficient_points", 0},
	{commerce.ErrPaymentRule, http.StatusUnprocessableEntity, "payment_rule_violated", 0},
	{commerce.ErrOrderExpired, http.StatusConflict, "order_expired", 0},
	{commerce.ErrCancelWindowClosed, http.StatusUnprocessableEntity, "cancel_window_closed", 0},
	{commerce.ErrRewardSpent, http.StatusUnprocessableEntity, "reward_spent", 0},
	{commerce.ErrRefundRejected, http.StatusUnprocessableEntity, "refund_rejected", 0},
	{commerce.ErrInvalidState, http.StatusConflict, "invalid_order_state", 0},

	// inventory.
	{inventory.ErrTooManyLines, http.StatusUnprocessableEntity, "too_many_lines", 0},
	{inventory.ErrQuantityTooLarge, http.StatusUnprocessableEntity, "quantity_too_large", 0},
	{inventory.ErrInvalidRequest, http.StatusBadRequest, "invalid_request", 0},
	{inventory.ErrUnknownSKU, http.StatusNotFound, "product_not_found", 0},
	{inventory.ErrInsufficientStock, http.StatusUnprocessableEntity, "out_of_stock", 0},
	{inventory.ErrBuyerLimitExceeded, http.StatusUnprocessableEntity, "buyer_limit_exceeded", 0},
	{inventory.ErrIdempotencyConflict, http.StatusUnprocessableEntity, "idempotency_key_reused", 0},
	{inventory.ErrContention, http.StatusServiceUnavailable, "contention", 1},

	// coupon.
	{coupon.ErrInvalidTemplate, http.StatusBadRequest, "invalid_coupon_template", 0},
	{coupon.ErrInvalidArgument, http.StatusBadRequest, "invalid_request", 0},
	{coupon.ErrTemplateNotFound, http.StatusNotFound, "coupon_template_not_found", 0},
	{coupon.ErrTemplateExists, http.StatusUnprocessableEntity, "coupon_template_exists", 0},
	{coupon.ErrNotStarted, http.StatusUnprocessableEntity, "coupon_issue_not_started", 0},
	{coupon.ErrEnded, http.StatusUnprocessableEntity, "coupon_issue_ended", 0},
	{coupon.ErrSoldOut, http.StatusUnprocessableEntity, "coupon_sold_out", 0},
	{coupon.ErrLimitReached, http.StatusUnprocessableEntity, "coupon_limit_reached", 0},
	{coupon.ErrRequestConflict, http.StatusUnprocessableEntity, "idempotency_key_reused", 0},
	{coupon.ErrCouponNotFound, http.StatusNotFound, "coupon_not_found", 0},
	{coupon.ErrNotOwner, http.StatusNotFound, "coupon_not_found", 0},
	{coupon.ErrNotAvailable, http.StatusUnprocessableEntity, "coupon_unusable", 0},
	{coupon.ErrNotYetUsable, http.StatusUnprocessableEntity, "coupon_unusable", 0},
	{coupon.ErrExpired, http.StatusUnprocessableEntity, "coupon_unusable", 0},
	{coupon.ErrBelowMinimum, http.StatusUnprocessableEntity, "coupon_unusable", 0},

	// commerce/collector.
	{collector.ErrInvalidArgument, http.StatusBadRequest, "invalid_request", 0},

	// ledger.
	{ledger.ErrInvalid, http.StatusBadRequest, "invalid_request", 0},
	{ledger.ErrInsufficientPoints, http.StatusUnprocessableEntity, "insufficient_points", 0},
	{ledger.ErrIDReused, http.StatusUnprocessableEntity, "idempotency_key_reused", 0},
	{ledger.ErrStorage, http.StatusServiceUnavailable, "storage_unavailable", 1},

	// payment.
	{payment.ErrInvalidWebhook, http.StatusBadRequest, "invalid_webhook", 0},
	{payment.ErrWebhookUnconfirmed, http.StatusConflict, "webhook_unconfirmed", 0},
	{payment.ErrInvalidRequest, http.StatusBadRequest, "invalid_request", 0},
	{payment.ErrPaymentNotFound, http.StatusNotFound, "payment_not_found", 0},
	{payment.ErrRefundNotFound, http.StatusNotFound, "refund_not_found", 0},
	{payment.ErrPaymentIDReused, http.StatusUnprocessableEntity, "idempotency_key_reused", 0},
	{payment.ErrDeclined, http.StatusUnprocessableEntity, "payment_declined", 0},
	{payment.ErrGatewayUnavailable, http.StatusServiceUnavailable, "payment_gateway_unavailable", 5},
	{payment.ErrOutcomeUnknown, http.StatusServiceUnavailable, "payment_outcome_unknown", 5},
	{payment.ErrRefundInProgress, http.StatusConflict, "refund_in_progress", 5},
	{payment.ErrIllegalTransition, http.StatusConflict, "invalid_payment_state", 0},

	// members and carts.
	{member.ErrInvalidRequest, http.StatusBadRequest, "invalid_request", 0},
	{member.ErrLoginIDTaken, http.StatusConflict, "login_id_taken", 0},
	{member.ErrBadCredentials, http.StatusUnauthorized, "invalid_credentials", 0},
	{member.ErrTooManyAttempts, http.StatusTooManyRequests, "too_many_login_attempts", 60},
	{member.ErrInvalidRefreshToken, http.StatusUnauthorized, "invalid_refresh_token", 0},
	{member.ErrRefreshTokenReused, http.StatusUnauthorized, "refresh_token_reused", 0},
	{member.ErrNotRevocable, http.StatusBadRequest, "token_not_revocable", 0},
	{cart.ErrInvalidRequest, http.StatusBadRequest, "invalid_request", 0},
	{cart.ErrTooManyLines, http.StatusUnprocessableEntity, "too_many_lines", 0},
	{cart.ErrQuantityTooLarge, http.StatusUnprocessableEntity, "quantity_too_large", 0},
	{cart.ErrEmpty, http.StatusUnprocessableEntity, "cart_empty", 0},
	{cart.ErrChanged, http.StatusConflict, "cart_changed", 1}, // nothing placed: retry, even with the key

	// The request's own deadline, or the client went away.
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "timeout", 1},
	{context.Canceled, http.StatusServiceUnavailable, "canceled", 1},
}

// problemFor maps err to its problem through errorRules. 4xx problems carry the error's
// text as detail (domain messages say what was wrong); 5xx ones do not, so internals
// never leak; they are logged instead.
func (s *Server) problemFor(err error) Problem {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return newProblem(http.StatusRequestEntityTooLarge, "body_too_large", http.StatusText(http.StatusRequestEntityTooLarge),
			"the request body exceeds the limit of "+strconv.FormatInt(mbe.Limit, 10)+" bytes")
	}
	for _, rule := range errorRules {
		if !errors.Is(err, rule.err) {
			continue
		}
		p := newProblem(rule.status, rule.code, http.StatusText(rule.status), "")
		p.RetryAfter = retrySeconds(err, rule.retryAfter)
		if rule.status < 500 {
			p.Detail = err.Error()
			p.Field = fieldOf(err)
		} else {
			p.Detail = "a dependency failed or timed out; retry later"
		}
		return p
	}
	if depfail.Is(err) { // a raw transport error that no package wrapped
		p := newProblem(http.StatusServiceUnavailable, "dependency_unavailable", http.StatusText(http.StatusServiceUnavailable),
			"a backend the request needs cannot be reached; retry later")
		p.RetryAfter = retrySeconds(err, 1)
		return p
	}
	return newProblem(http.StatusInternalServerError, "internal", "Internal Server Error",
		"the server failed to handle the request; it has been logged")
}

// retrySeconds is the Retry-After of err in whole seconds: the hint an
// *errcode.UnavailableError carries (rounded up), else def.
func retrySeconds(err error, def int) int {
	d := errcode.RetryAfter(err, 0)
	if d <= 0 {
		return def
	}
	return int((d + time.Second - 1) / time.Second)
}

// code is the metric label of an error: its problem code.
func (s *Server) code(err error) string { return s.problemFor(err).Code }

// fieldOf returns the field a validation error names, if any.
func fieldOf(err error) string {
	for _, f := range []func(error) (string, bool){
		field[*commerce.ValidationError](func(e *commerce.ValidationError) string { return e.Field }),
		field[*inventory.ValidationError](func(e *inventory.ValidationError) string { return e.Field }),
		field[*coupon.ValidationError](func(e *coupon.ValidationError) string { return e.Field }),
		field[*ledger.ValidationError](func(e *ledger.ValidationError) string { return e.Field }),
		field[*payment.ValidationError](func(e *payment.ValidationError) string { return e.Field }),
		field[*idempotency.InvalidError](func(e *idempotency.InvalidError) string { return e.Field }),
		field[*member.ValidationError](func(e *member.ValidationError) string { return e.Field }),
		field[*cart.ValidationError](func(e *cart.ValidationError) string { return e.Field }),
	} {
		if name, ok := f(err); ok {
			return name
		}
	}
	return ""
}

// field returns a function that finds an error of type E in a chain and reads its field.
func field[E error](get func(E) string) func(error) (string, bool) {
	return func(err error) (string, bool) {
		var e E
		if errors.As(err, &e) {
			return get(e), true
		}
		return "", false
	}
}
