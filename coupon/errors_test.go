package coupon_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

// TestErrorCodes: the typed errors carry their sentinel's code and reason.
func TestErrorCodes(t *testing.T) {
	for _, c := range []struct {
		err    error
		code   errcode.Code
		reason string
	}{
		{&coupon.IssueError{Err: coupon.ErrSoldOut}, errcode.FailedPrecondition, "coupon_sold_out"},
		{fmt.Errorf("checkout: %w", &coupon.RedeemError{Err: coupon.ErrNotOwner}), errcode.NotFound, "coupon_not_found"},
		{&coupon.IssueError{Err: coupon.ErrRequestConflict}, errcode.AlreadyExists, "idempotency_key_reused"},
		{&coupon.ValidationError{Err: coupon.ErrInvalidTemplate, Field: "Percent", Reason: "r"}, errcode.InvalidArgument, "invalid_coupon_template"},
		{fmt.Errorf("x: %w", context.Canceled), errcode.Canceled, "canceled"},
		{errors.New("disk on fire"), errcode.Unknown, "unknown"},
	} {
		code, reason := errcode.Of(c.err)
		assert.Equal(t, c.code, code, c.err)
		assert.Equal(t, c.reason, reason, c.err)
	}
	assert.ErrorIs(t, &coupon.ValidationError{Err: coupon.ErrInvalidTemplate}, coupon.ErrInvalidArgument, "a template error is invalid input")
}

func TestErrorMessages(t *testing.T) {
	err := error(&coupon.IssueError{Err: coupon.ErrLimitReached, TemplateID: "t", UserID: "u", RequestID: "r", Limit: 2})
	assert.Equal(t, `coupon: per-user limit reached (template "t", user "u", request "r", limit 2)`, err.Error())
	err = &coupon.RedeemError{Err: coupon.ErrBelowMinimum, CouponID: "c", OrderID: "o", MinOrderAmount: 20000, OrderAmount: 100}
	assert.Equal(t, `coupon: order amount below the coupon's minimum (coupon "c", order "o", minimum 20000, order amount 100)`, err.Error())
	err = &coupon.ValidationError{Err: coupon.ErrInvalidTemplate, Field: "Percent", Reason: "must be between 1 and 100"}
	assert.Equal(t, "coupon: invalid template: Percent: must be between 1 and 100", err.Error())
}

// TestNewRefusesBadOptions checks that New refuses every invalid option value with an
// error naming the option (the conformance suites show WithClock taking effect).
func TestNewRefusesBadOptions(t *testing.T) {
	db := testenv.SQLite(t)
	construct := func(opts ...coupon.Option) (*coupon.Service, error) { return coupon.New(db, sqlcoupon.New(), opts...) }
	testkit.RefusesBadOptions(t, construct, map[string]coupon.Option{
		"WithClock: nil":    coupon.WithClock(nil),
		"WithLogger: nil":   coupon.WithLogger(nil),
		"WithObserver: nil": coupon.WithObserver(nil),
	})
}
