package rediscoupon_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/rediscoupon"
	"github.com/commercekit/commercekit/errcode"
)

// A first-come coupon whose rush is settled in Redis: only the winners write to SQL, where
// the coupons are kept. Once Redis answers again after losing its data, the Service
// rebuilds the counts from SQL. (It needs Redis and a database, so it is compiled, not run.)
func Example() {
	ctx := context.Background()
	var db *bun.DB // MySQL/MariaDB or SQLite, with coupon.CreateSchema applied
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()

	svc, err := coupon.New(db, rediscoupon.New(rdb, rediscoupon.WithKeyPrefix("shop:coupons:")))
	if err != nil {
		panic(err)
	}
	c, err := svc.Issue(ctx, "black-friday", "kim", "request-7f3a")
	switch {
	case errors.Is(err, coupon.ErrSoldOut):
		fmt.Println("too late")
	case err != nil:
		fmt.Println(errcode.CodeOf(err), err) // DependencyUnavailable while Redis is down: answer 503
	default:
		fmt.Println("won", c.ID, "place", c.Place)
	}
}
