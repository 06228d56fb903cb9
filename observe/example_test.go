package observe_test

import (
	"context"
	"fmt"
	"time"

	"github.com/commercekit/commercekit/ledger"
	"github.com/commercekit/commercekit/observe"
	"github.com/commercekit/commercekit/sqlitedb"
)

// One function observes every package; here it prints what a ledger reports (a metrics
// exporter would count the events by Component, Name and error instead).
func ExampleFunc() {
	ctx := context.Background()
	db, err := sqlitedb.Open("file:observe-example?mode=memory&cache=shared")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := ledger.CreateSchema(ctx, db); err != nil {
		panic(err)
	}
	obs := observe.Func(func(e observe.Event) {
		fmt.Printf("%s %s err=%v\n", e.Component, e.Name, e.Err != nil)
	})
	l, err := ledger.New(db, ledger.WithObserver(obs))
	if err != nil {
		panic(err)
	}
	if _, err := l.Charge(ctx, ledger.ChargeRequest{ID: "c1", User: "kim", Amount: 100}); err != nil {
		panic(err)
	}
	_, err = l.Hold(ctx, "h1", "kim", 500, time.Minute)
	fmt.Println(err != nil)
	// Output:
	// ledger charge err=false
	// ledger hold err=true
	// true
}
