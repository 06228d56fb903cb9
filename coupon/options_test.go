package coupon_test

import (
	"testing"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

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
