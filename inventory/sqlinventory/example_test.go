package sqlinventory_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/sqlinventory"
	"github.com/commercekit/commercekit/sqlitedb"
)

// A reservation that joins the caller's transaction (Inventory.WithTx) commits with the
// caller's own writes or not at all: here the caller's order cannot be recorded the first
// time, and its units are free again.
func Example_callerTransaction() {
	ctx := context.Background()
	db, err := sqlitedb.Open("file:sqlinventory-example?mode=memory&cache=shared")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := sqlinventory.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	inv, err := inventory.New(sqlinventory.New(db))
	if err != nil {
		panic(err)
	}
	if _, err := inv.SetStock(ctx, inventory.StockSetting{SKU: "mug", OnHand: 3}); err != nil {
		panic(err)
	}

	errOrder := errors.New("the order could not be recorded")
	place := func(orderID string, recordOrder func() error) error {
		return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			req := inventory.ReserveRequest{ID: orderID, Lines: []inventory.Line{{SKU: "mug", Qty: 2}}}
			if _, err := inv.WithTx(tx).Reserve(ctx, req); err != nil {
				return err
			}
			return recordOrder() // the caller's own writes, through tx
		})
	}
	show := func() {
		st, err := inv.Stock(ctx, "mug")
		if err != nil {
			panic(err)
		}
		fmt.Printf("available %d, reserved %d\n", st.Available, st.Reserved)
	}

	err = place("order-1", func() error { return errOrder })
	fmt.Println("order-1:", err)
	show()
	err = place("order-2", func() error { return nil })
	fmt.Println("order-2:", err)
	show()
	// Output:
	// order-1: the order could not be recorded
	// available 3, reserved 0
	// order-2: <nil>
	// available 1, reserved 2
}
