package sqlitedb_test

import (
	"context"
	"fmt"

	"github.com/commercekit/commercekit/sqlitedb"
)

// An in-memory database for a test or a demo; use a file name to keep the data.
func ExampleOpen() {
	db, err := sqlitedb.Open("file:sqlitedb-example?mode=memory&cache=shared")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	var version string
	if err := db.NewRaw("SELECT sqlite_version()").Scan(context.Background(), &version); err != nil {
		panic(err)
	}
	fmt.Println(version != "")
	// Output: true
}
