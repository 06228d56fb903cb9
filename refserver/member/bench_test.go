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
// common case) on each store, one at a time:
//
//	go test -run '^$' -bench Denied ./refserver/member/
func BenchmarkDenied(b *testing.B) {
	for _, store := range []struct {
		name string
		open func(b *testing.B) member.Denylist
	}{
		{"sqlite", func(b *testing.B) member.Denylist { return sqlDenylist(b, testenv.SQLite(b)) }},
		{"mysql", func(b *testing.B) member.Denylist { return sqlDenylist(b, testenv.MySQL(b)) }},
		{"redis", func(b *testing.B) member.Denylist {
			return member.NewRedisDenylist(testenv.Redis(b), sqlDenylist(b, testenv.MySQL(b)).(*member.SQLDenylist))
		}},
	} {
		b.Run(store.name, func(b *testing.B) {
			deny := store.open(b)
			require.NoError(b, deny.Deny(ctx, "on-the-list", time.Now().Add(time.Hour)))
			for b.Loop() {
				if denied, err := deny.Denied(ctx, "not-on-the-list"); err != nil || denied {
					b.Fatal(denied, err)
				}
			}
		})
	}
}

func sqlDenylist(b *testing.B, db *bun.DB) member.Denylist {
	require.NoError(b, member.CreateSchema(ctx, db))
	return member.NewSQLDenylist(db, nil)
}
