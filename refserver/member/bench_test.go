package member_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/refserver/member"
)

// BenchmarkDenied measures one denylist lookup (a token that is not on the list, the
// common case) on each store, one at a time, with the SQL statements it sends (sql/op;
// the Redis denylist's reads of its unpublished denials):
//
//	go test -run '^$' -bench Denied ./refserver/member/
func BenchmarkDenied(b *testing.B) {
	sql := func(_ *testing.B, db bun.IDB) member.Denylist { return member.NewSQLDenylist(db, nil) }
	for _, store := range []struct {
		name string
		db   func(testing.TB) *bun.DB
		open func(b *testing.B, db bun.IDB) member.Denylist
	}{
		{"sqlite", testenv.SQLite, sql},
		{"mysql", testenv.MySQL, sql},
		{"redis", testenv.MySQL, func(b *testing.B, db bun.IDB) member.Denylist {
			return member.NewRedisDenylist(testenv.Redis(b), member.NewSQLDenylist(db, nil))
		}},
	} {
		b.Run(store.name, func(b *testing.B) {
			db, stmts := store.db(b), &statements{}
			require.NoError(b, member.CreateSchema(ctx, db))
			deny := store.open(b, db.WithQueryHook(stmts))
			require.NoError(b, deny.Deny(ctx, "on-the-list", time.Now().Add(time.Hour)))
			before := stmts.n.Load()
			for b.Loop() {
				if denied, err := deny.Denied(ctx, "not-on-the-list"); err != nil || denied {
					b.Fatal(denied, err)
				}
			}
			b.ReportMetric(float64(stmts.n.Load()-before)/float64(b.N), "sql/op")
		})
	}
}
