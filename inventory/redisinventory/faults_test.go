package redisinventory_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// TestDurableHealJournalFails: a Heal, a Rebuild or a Generation whose read of the journal
// fails (its connection reset) answers an error matching errcode.ErrUnavailable, like every
// other call of a Durable meeting a database outage, never an unclassified error (a 500
// where the database being down is a 503); and the next heal, the database back, builds
// nothing more than it has to.
func TestDurableHealJournalFails(t *testing.T) {
	ctx := context.Background()
	_, rdb, db := newDurable(t)
	f := &testkit.FailStatement{}
	d := testkit.Must(redisinventory.NewDurable(rdb, db.WithQueryHook(f)))(t)
	heal := func() error { _, err := d.Heal(ctx); return err }
	rebuild := func() error { _, err := d.Rebuild(ctx); return err }
	generation := func() error { _, _, err := d.Generation(ctx); return err }
	for _, c := range []struct {
		name  string
		match []string
		call  func() error
	}{
		{"Heal, the rebuild lock", []string{"name = 'rebuild'"}, heal},
		{"Heal, the generations", []string{"'gen', 'built', 'behind'"}, heal},
		{"Rebuild, the rebuild lock", []string{"name = 'rebuild'"}, rebuild},
		{"Generation", []string{"name = 'gen'"}, generation},
	} {
		f.Arm(1, c.match...)
		err := c.call()
		require.NotEmpty(t, f.Disarm(), c.name)
		testkit.RequireConnReset(t, err)
	}
	healed, err := d.Heal(ctx)
	require.NoError(t, err)
	require.False(t, healed, "Redis holds the journal's generation")
}
