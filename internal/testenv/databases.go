package testenv

import (
	"testing"

	"github.com/uptrace/bun"
)

// Database is one of the two SQL configurations every SQL package is tested on.
type Database struct {
	// Name names the subtest: "SQLite" or "MySQL" (go test -run 'Test.*/MySQL' picks one).
	Name string
	// Open returns a fresh, empty database of the test's own: SQLite or MySQL.
	Open func(testing.TB) *bun.DB
}

// Databases returns the embedded SQLite and MySQL, in that order.
func Databases() []Database { return []Database{{"SQLite", SQLite}, {"MySQL", MySQL}} }

// Runner is a *testing.T or a *testing.B: a test that runs subtests of its own kind.
type Runner[T any] interface {
	testing.TB
	Run(name string, fn func(T)) bool
}

// EachDB runs fn as a subtest (or sub-benchmark) of t on a fresh database of each of
// Databases.
func EachDB[T Runner[T]](t T, fn func(t T, db *bun.DB)) {
	for _, d := range Databases() {
		t.Run(d.Name, func(t T) { fn(t, d.Open(t)) })
	}
}
