package coupon_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/sqlitedb"
)

// Example issues a first-come coupon on SQLite and uses it at checkout: reserved inside the
// order's transaction, confirmed once paid.
func Example() {
	ctx := context.Background()
	db, err := sqlitedb.Open("file:coupon_example?mode=memory&cache=shared")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := coupon.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	if err := sqlcoupon.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	now := time.Date(2030, 3, 1, 9, 0, 0, 0, time.UTC)
	svc, err := coupon.New(db, sqlcoupon.New(), coupon.WithClock(func() time.Time { return now }))
	if err != nil {
		panic(err)
	}

	tpl, err := svc.CreateTemplate(ctx, coupon.Template{
		ID: "spring-10", Name: "Spring 10%",
		Terms:     coupon.Terms{Kind: coupon.PercentOff, Percent: 10, MaxDiscount: 5000, MinOrderAmount: 20000},
		ValidDays: 7, TotalQuantity: 2,
	})
	if err != nil {
		panic(err)
	}
	for _, user := range []string{"alice", "bob", "carol"} {
		c, err := svc.Issue(ctx, tpl.ID, user, "signup-"+user)
		if errors.Is(err, coupon.ErrSoldOut) {
			fmt.Println(user, "is too late")
			continue
		}
		if err != nil {
			panic(err)
		}
		fmt.Println(user, "got a coupon, usable until", c.ExpiresAt.Format(time.DateOnly))
	}

	wallet, err := svc.Wallet(ctx, "alice", coupon.WalletQuery{State: coupon.StateAvailable})
	if err != nil {
		panic(err)
	}
	c := wallet.Coupons[0]
	fmt.Println("10% off 31,999 is", coupon.Discount(c, 31_999), "and off 80,000 capped at", coupon.Discount(c, 80_000))

	// Checkout: the reservation commits or rolls back with the order.
	err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		red, err := svc.WithTx(tx).Reserve(ctx, c.ID, "alice", "order-1", 31_999)
		if err != nil {
			return err
		}
		fmt.Println("order-1 reserved the coupon for", red.Discount, "off")
		return nil
	})
	if err != nil {
		panic(err)
	}
	_, err = svc.Reserve(ctx, c.ID, "alice", "order-2", 50_000)
	fmt.Println("order-2:", errors.Is(err, coupon.ErrNotAvailable), errcode.ReasonOf(err))

	reds, err := svc.Confirm(ctx, "order-1")
	if err != nil {
		panic(err)
	}
	fmt.Println("order-1 paid:", reds[0].State)
	// Output:
	// alice got a coupon, usable until 2030-03-08
	// bob got a coupon, usable until 2030-03-08
	// carol is too late
	// 10% off 31,999 is 3199 and off 80,000 capped at 5000
	// order-1 reserved the coupon for 3199 off
	// order-2: true coupon_unusable
	// order-1 paid: confirmed
}
