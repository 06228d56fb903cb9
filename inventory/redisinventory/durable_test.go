package redisinventory_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// newDurable returns a journaled backend on a MySQL database and a Redis database of the
// test's own, healed (built from the empty journal).
func newDurable(tb testing.TB, opts ...redisinventory.Option) *redisinventory.Durable {
	tb.Helper()
	ctx := context.Background()
	db := testenv.MySQL(tb)
	require.NoError(tb, redisinventory.CreateJournal(ctx, db))
	d := redisinventory.NewDurable(testenv.Redis(tb), db, opts...)
	healed, err := d.Heal(ctx)
	require.NoError(tb, err)
	require.True(tb, healed, "a new journal's generation is built at the first heal")
	return d
}
