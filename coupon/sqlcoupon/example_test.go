package sqlcoupon_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/sqlitedb"
)

// With the SQL issuer, Issue joins the caller's transaction: the welcome coupon of a
// sign-up that fails is never issued, and its place goes to the next user.
func Example_callerTransaction() {
	ctx := context.Background()
	db, err := sqlitedb.Open("file:sqlcoupon-example?mode=memory&cache=shared")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	for _, create := range []func(context.Context, bun.IDB) error{coupon.CreateSchema, sqlcoupon.CreateSchema} {
		if err := create(ctx, db); err != nil {
			panic(err)
		}
	}
	svc, err := coupon.New(db, sqlcoupon.New())
	if err != nil {
		panic(err)
	}
	tpl, err := svc.CreateTemplate(ctx, coupon.Template{
		ID: "welcome", Name: "Welcome 3,000 won",
		Terms:     coupon.Terms{Kind: coupon.FixedAmount, Amount: 3000},
		ValidDays: 30, TotalQuantity: 1,
	})
	if err != nil {
		panic(err)
	}

	errSignUp := errors.New("the member could not be saved")
	signUp := func(user string, save func() error) error {
		return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if _, err := svc.WithTx(tx).Issue(ctx, tpl.ID, user, "signup-"+user); err != nil {
				return err
			}
			return save() // the caller's own writes, through tx
		})
	}
	fmt.Println("alice:", signUp("alice", func() error { return errSignUp }))
	fmt.Println("bob:", signUp("bob", func() error { return nil }))
	err = signUp("carol", func() error { return nil })
	fmt.Println("carol sold out:", errors.Is(err, coupon.ErrSoldOut))
	wallet, err := svc.Wallet(ctx, "bob", coupon.WalletQuery{})
	if err != nil {
		panic(err)
	}
	fmt.Println("bob holds", len(wallet.Coupons), "coupon, place", wallet.Coupons[0].Place, "of", tpl.TotalQuantity,
		"valid", wallet.Coupons[0].ExpiresAt.Sub(wallet.Coupons[0].IssuedAt).Round(time.Hour))
	// Output:
	// alice: the member could not be saved
	// bob: <nil>
	// carol sold out: true
	// bob holds 1 coupon, place 1 of 1 valid 720h0m0s
}
