package coupon_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/commercekit/commercekit/coupon"
)

func TestCode(t *testing.T) {
	assert.Equal(t, "", coupon.Code(nil))
	assert.Equal(t, "sold_out", coupon.Code(&coupon.IssueError{Err: coupon.ErrSoldOut}))
	assert.Equal(t, "not_owner", coupon.Code(fmt.Errorf("checkout: %w", &coupon.RedeemError{Err: coupon.ErrNotOwner})))
	assert.Equal(t, "canceled", coupon.Code(fmt.Errorf("x: %w", context.Canceled)))
	assert.Equal(t, "deadline_exceeded", coupon.Code(context.DeadlineExceeded))
	assert.Equal(t, "internal", coupon.Code(errors.New("disk on fire")))
}

func TestErrorMessages(t *testing.T) {
	err := error(&coupon.IssueError{Err: coupon.ErrLimitReached, TemplateID: "t", UserID: "u", RequestID: "r", Limit: 2})
	assert.Equal(t, `coupon: per-user limit reached (template "t", user "u", request "r", limit 2)`, err.Error())
	err = &coupon.RedeemError{Err: coupon.ErrBelowMinimum, CouponID: "c", OrderID: "o", MinOrderAmount: 20000, OrderAmount: 100}
	assert.Equal(t, `coupon: order amount below the coupon's minimum (coupon "c", order "o", minimum 20000, order amount 100)`, err.Error())
	err = &coupon.ValidationError{Err: coupon.ErrInvalidTemplate, Field: "Percent", Reason: "must be between 1 and 100"}
	assert.Equal(t, "coupon: invalid template: Percent must be between 1 and 100", err.Error())
}
