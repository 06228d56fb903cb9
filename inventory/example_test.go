package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
	"github.com/commercekit/commercekit/sqlitedb"
)

// A flash sale on the embedded SQLite backend: two units, one per buyer.
func Example() {
	ctx := context.Background()
	db, err := sqlitedb.Open("file:example?mode=memory&cache=shared")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := sqlinventory.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	inv, err := inventory.New(sqlinventory.New(db), inventory.WithDefaultTTL(10*time.Minute))
	if err != nil {
		panic(err)
	}

	if _, err := inv.SetStock(ctx, inventory.StockSetting{SKU: "sneaker-270", OnHand: 2, BuyerLimit: 1}); err != nil {
		panic(err)
	}
	for _, o := range []struct{ order, buyer string }{{"order-1", "kim"}, {"order-2", "kim"}, {"order-3", "lee"}, {"order-4", "park"}} {
		_, err := inv.Reserve(ctx, inventory.ReserveRequest{
			ID: o.order, BuyerID: o.buyer, Lines: []inventory.Line{{SKU: "sneaker-270", Qty: 1}},
		})
		var short *inventory.InsufficientStockError
		switch {
		case err == nil:
			fmt.Println(o.order, "reserved")
		case errors.Is(err, inventory.ErrBuyerLimitExceeded):
			fmt.Println(o.order, "refused: one per customer")
		case errors.As(err, &short):
			fmt.Printf("%s refused: %d of %s left\n", o.order, short.Available, short.SKU)
		default:
			panic(err)
		}
	}

	if err := inv.Commit(ctx, "order-1"); err != nil { // paid
		panic(err)
	}
	if err := inv.Release(ctx, "order-3"); err != nil { // cancelled
		panic(err)
	}
	st, err := inv.Stock(ctx, "sneaker-270")
	if err != nil {
		panic(err)
	}
	fmt.Printf("on hand %d, available %d, reserved %d, sold %d\n", st.OnHand, st.Available, st.Reserved, st.Sold)
	// Output:
	// order-1 reserved
	// order-2 refused: one per customer
	// order-3 reserved
	// order-4 refused: 0 of sneaker-270 left
	// on hand 1, available 1, reserved 0, sold 1
}
