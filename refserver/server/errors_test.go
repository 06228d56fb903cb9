package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/cart"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/payment"
	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/refserver/member"
)

// TestDependencyFailuresAre503: a dependency failure is 503 dependency_unavailable with
// Retry-After, whether a package wrapped it (errcode) or it slipped through raw, and wins
// over any business meaning the same error also carries.
func TestDependencyFailuresAre503(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	_, refused := net.Dial("tcp", addr) // a real "connection refused"
	require.Error(t, refused)

	s := testServer()
	for name, tc := range map[string]struct {
		err   error
		retry int
	}{
		"raw transport error":     {fmt.Errorf("loading the order: %w", refused), 1},
		"wrapped by a backend":    {errcode.Unavailable("redis", refused), 1},
		"with a retry hint":       {&errcode.UnavailableError{Dependency: "redis (stock rebuilding)", RetryAfter: 2500 * time.Millisecond}, 3},
		"beside a business error": {errors.Join(commerce.ErrOutOfStock, errcode.Unavailable("redis", refused)), 1},
	} {
		t.Run(name, func(t *testing.T) {
			p := s.problemFor(tc.err)
			assert.Equal(t, http.StatusServiceUnavailable, p.Status)
			assert.Equal(t, "dependency_unavailable", p.Code)
			assert.Equal(t, tc.retry, p.RetryAfter)
			assert.NotContains(t, p.Detail, addr, "internals are not shown")
		})
	}
	assert.Equal(t, http.StatusInternalServerError, s.problemFor(errors.New("a bug")).Status)
}

// TestErrorMapping: every domain error keeps the status, problem code and Retry-After the
// server answered before errors carried codes (the rows are the former error table), bare
// and wrapped, and the typed errors map like their sentinels.
func TestErrorMapping(t *testing.T) {
	s := testServer()
	for _, c := range []struct {
		err    error
		status int
		code   string
		retry  int
	}{
		{errcode.ErrUnavailable, http.StatusServiceUnavailable, "dependency_unavailable", 1},
		{errMalformed, http.StatusBadRequest, "malformed_request", 0},
		{idempotency.ErrInvalid, http.StatusBadRequest, "invalid_request", 0}, // the header is checked first: invalid_idempotency_key
		{idempotency.ErrKeyReused, http.StatusUnprocessableEntity, "idempotency_key_reused", 0},
		{idempotency.ErrInProgress, http.StatusConflict, "request_in_progress", 1},
		{idempotency.ErrLockLost, http.StatusConflict, "request_in_progress", 1},
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
		{inventory.ErrTooManyLines, http.StatusUnprocessableEntity, "too_many_lines", 0},
		{inventory.ErrQuantityTooLarge, http.StatusUnprocessableEntity, "quantity_too_large", 0},
		{inventory.ErrInvalidRequest, http.StatusBadRequest, "invalid_request", 0},
		{inventory.ErrUnknownSKU, http.StatusNotFound, "product_not_found", 0},
		{inventory.ErrInsufficientStock, http.StatusUnprocessableEntity, "out_of_stock", 0},
		{inventory.ErrBuyerLimitExceeded, http.StatusUnprocessableEntity, "buyer_limit_exceeded", 0},
		{inventory.ErrIdempotencyConflict, http.StatusUnprocessableEntity, "idempotency_key_reused", 0},
		{inventory.ErrContention, http.StatusServiceUnavailable, "contention", 1},
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
		{collector.ErrInvalidArgument, http.StatusBadRequest, "invalid_request", 0},
		{ledger.ErrInvalid, http.StatusBadRequest, "invalid_request", 0},
		{ledger.ErrInsufficientPoints, http.StatusUnprocessableEntity, "insufficient_points", 0},
		{ledger.ErrBalanceLimit, http.StatusUnprocessableEntity, "points_balance_limit", 0},
		{ledger.ErrIDReused, http.StatusUnprocessableEntity, "idempotency_key_reused", 0},
		{ledger.ErrStorage, http.StatusServiceUnavailable, "storage_unavailable", 1},
		// The two-phase (hold) answers of the leaves: a state, never a 500.
		{ledger.ErrSpendNotFound, http.StatusNotFound, "points_spend_not_found", 0},
		{ledger.ErrRefundExceedsSpend, http.StatusUnprocessableEntity, "points_refund_exceeds_spend", 0},
		{ledger.ErrCaptureExceedsHold, http.StatusUnprocessableEntity, "points_capture_exceeds_hold", 0},
		{ledger.ErrHoldNotFound, http.StatusNotFound, "points_hold_not_found", 0},
		{ledger.ErrHoldCaptured, http.StatusConflict, "points_hold_captured", 0},
		{ledger.ErrHoldVoided, http.StatusConflict, "points_hold_voided", 0},
		{ledger.ErrHoldExpired, http.StatusConflict, "points_hold_expired", 0},
		{inventory.ErrReservationNotFound, http.StatusNotFound, "reservation_not_found", 0},
		{inventory.ErrReservationCommitted, http.StatusConflict, "reservation_committed", 0},
		{inventory.ErrReservationReleased, http.StatusConflict, "reservation_released", 0},
		{inventory.ErrReservationExpired, http.StatusConflict, "reservation_expired", 0},
		{inventory.ErrReservationReturned, http.StatusConflict, "reservation_returned", 0},
		{inventory.ErrReservationNotCommitted, http.StatusConflict, "reservation_not_committed", 0},
		{coupon.ErrRedemptionNotFound, http.StatusNotFound, "coupon_redemption_not_found", 0},
		{coupon.ErrRedemptionClosed, http.StatusConflict, "coupon_redemption_restored", 0},
		{coupon.ErrRedemptionConflict, http.StatusConflict, "coupon_redemption_conflict", 0},
		{coupon.ErrRedemptionConfirmed, http.StatusConflict, "coupon_redemption_confirmed", 0},
		{coupon.ErrHoldExpired, http.StatusConflict, "coupon_hold_expired", 0},
		{payment.ErrInvalidWebhook, http.StatusBadRequest, "invalid_webhook", 0},
		{payment.ErrWebhookUnconfirmed, http.StatusConflict, "webhook_unconfirmed", 0},
		{payment.ErrInvalidRequest, http.StatusBadRequest, "invalid_request", 0},
		{payment.ErrPaymentNotFound, http.StatusNotFound, "payment_not_found", 0},
		{payment.ErrRefundNotFound, http.StatusNotFound, "refund_not_found", 0},
		{payment.ErrPaymentIDReused, http.StatusUnprocessableEntity, "idempotency_key_reused", 0},
		{payment.ErrDeclined, http.StatusUnprocessableEntity, "payment_declined", 0},
		// The PG down or silent is a dependency failure like any other (errcode.ErrUnavailable).
		{payment.ErrGatewayUnavailable, http.StatusServiceUnavailable, "dependency_unavailable", 1},
		{payment.ErrAbandoned, http.StatusServiceUnavailable, "dependency_unavailable", 1},
		{payment.ErrOutcomeUnknown, http.StatusServiceUnavailable, "dependency_unavailable", 1},
		{&errcode.UnavailableError{Dependency: "pg", RetryAfter: 20 * time.Second, Err: payment.ErrAbandoned}, http.StatusServiceUnavailable, "dependency_unavailable", 20},
		{payment.ErrRefundInProgress, http.StatusConflict, "refund_in_progress", 5},
		{payment.ErrIllegalTransition, http.StatusConflict, "invalid_payment_state", 0},
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
		{cart.ErrChanged, http.StatusConflict, "cart_changed", 1},
		{context.DeadlineExceeded, http.StatusServiceUnavailable, "timeout", 1},
		{context.Canceled, http.StatusServiceUnavailable, "canceled", 1},

		// Typed errors and the way packages wrap them.
		{&inventory.ValidationError{Field: "lines", Reason: "more than 50 lines", Err: inventory.ErrTooManyLines}, http.StatusUnprocessableEntity, "too_many_lines", 0},
		{&inventory.ValidationError{Field: "qty", Reason: "must be positive", Err: inventory.ErrInvalidQuantity}, http.StatusBadRequest, "invalid_request", 0},
		{fmt.Errorf("%w: %w", commerce.ErrOutOfStock, &inventory.InsufficientStockError{SKU: "a"}), http.StatusUnprocessableEntity, "out_of_stock", 0},
		{fmt.Errorf("%w: %w", commerce.ErrCouponUnusable, &coupon.RedeemError{Err: coupon.ErrNotOwner}), http.StatusUnprocessableEntity, "coupon_unusable", 0},
		{&coupon.IssueError{Err: coupon.ErrSoldOut}, http.StatusUnprocessableEntity, "coupon_sold_out", 0},
		{&coupon.ValidationError{Field: "Percent", Reason: "r", Err: coupon.ErrInvalidTemplate}, http.StatusBadRequest, "invalid_coupon_template", 0},
		{fmt.Errorf("%w: %w", payment.ErrRefundRejected, &payment.DeclineError{Code: "x"}), http.StatusUnprocessableEntity, "payment_declined", 0},
		{&payment.TransitionError{PaymentID: "p"}, http.StatusConflict, "invalid_payment_state", 0},
		{&idempotency.KeyError{Err: idempotency.ErrInProgress}, http.StatusConflict, "request_in_progress", 1},
		{&idempotency.KeyError{Err: idempotency.ErrKeyReused}, http.StatusUnprocessableEntity, "idempotency_key_reused", 0},
		{&member.RateLimitError{By: "address", RetryAfter: time.Minute}, http.StatusTooManyRequests, "too_many_login_attempts", 60},
		{&ledger.IDReusedError{Key: "t", Err: ledger.ErrIDReused}, http.StatusUnprocessableEntity, "idempotency_key_reused", 0},
		{&commerce.StateError{OrderID: "o"}, http.StatusConflict, "invalid_order_state", 0},
		{fmt.Errorf("%w: %w", ledger.ErrStorage, errcode.Unavailable("mysql", errors.New("gone"))), http.StatusServiceUnavailable, "dependency_unavailable", 1},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), http.StatusServiceUnavailable, "timeout", 1},
		{commerce.ErrInjected, http.StatusInternalServerError, "internal", 0},
		{errors.New("a bug"), http.StatusInternalServerError, "internal", 0},
	} {
		for _, err := range []error{c.err, fmt.Errorf("handler: %w", c.err)} {
			p := s.problemFor(err)
			assert.Equal(t, c.status, p.Status, err.Error())
			assert.Equal(t, c.code, p.Code, err.Error())
			assert.Equal(t, c.retry, p.RetryAfter, err.Error())
		}
	}
	p := s.problemFor(fmt.Errorf("place: %w", &commerce.ValidationError{Field: "Lines", Reason: "empty"}))
	assert.Equal(t, "lines", p.Field, "a validation problem names its field as the API spells it")
}

// TestCartChangedFreesTheKey: 409 cart_changed tells the client to retry (OpenAPI:
// "409 cart_changed when it changed meanwhile: retry"), and nothing was placed, so the
// answer must not be kept for the Idempotency-Key: a retry with the same key orders the
// cart as it is now instead of replaying the 409 forever.
func TestCartChangedFreesTheKey(t *testing.T) {
	s := testServer()
	w := httptest.NewRecorder()
	s.writeError(w, httptest.NewRequest(http.MethodPost, "/v1/orders", nil), fmt.Errorf("commerce: %w", cart.ErrChanged))
	assert.Equal(t, http.StatusConflict, w.Code)
	assert.False(t, keepResponse(w.Code, w.Header(), "cart_changed"), "a cart_changed answer is not final for its key")

	w = httptest.NewRecorder()
	s.writeError(w, httptest.NewRequest(http.MethodPost, "/v1/orders", nil), cart.ErrEmpty)
	assert.True(t, keepResponse(w.Code, w.Header(), "cart_empty"), "cart_empty stays final")
}

// TestWireField: a validation problem names its field as the API spells it, whatever the
// library called it.
func TestWireField(t *testing.T) {
	for in, want := range map[string]string{
		"Qty": "qty", "ProductID": "product_id", "ProductIDs": "product_ids", "OrderAmount": "order_amount",
		"CouponID": "coupon_id", "ID": "id", "IdempotencyKey": IdempotencyKeyHeader,
		"status": "status", "login_id": "login_id", "": "",
	} {
		assert.Equal(t, want, wireField(in), in)
	}
}
