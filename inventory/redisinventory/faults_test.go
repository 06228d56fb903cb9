package redisinventory_test

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
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

// TestDurableStraySweepRecordGone: the sweep of Redis strays reads a stray's record, then
// settles it; when the record is gone in between (another sweeper settled it, and its
// retention ran out), there is nothing left to settle. The sweep once answered that as
// the reservation not found wrapped as Redis being unavailable: an error matching both
// errcode.ErrUnavailable and inventory.ErrReservationNotFound, from a sweep that met no
// failure and had nothing wrong to report.
func TestDurableStraySweepRecordGone(t *testing.T) {
	ctx := context.Background()
	d0, rdb, db := newDurable(t)
	inv := testkit.Must(inventory.New(d0))(t)
	setStock(t, inv, "a", 2, 0)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "stray", Lines: line("a", 1), TTL: time.Minute})
	require.NoError(t, err)
	// A process died between releasing "stray" in the journal and in Redis.
	_, err = db.ExecContext(ctx, `UPDATE inventory_journal_reservations SET state = 'released' WHERE id = 'stray'`)
	require.NoError(t, err)

	// The sweep's Redis goes through a proxy that, as the settle script of "stray" is
	// about to reach Redis, does what another sweeper's settle and the retention's end
	// leave: the units back, the record and its due entry gone.
	var settled atomic.Bool
	opts := rdb.Options()
	ln := testenv.ProxyListener(t, func(c net.Conn) {
		testenv.Proxy(c, opts.Addr, testenv.RedisCommand, func(q string) testenv.Cut {
			q = strings.ToLower(q)
			if strings.HasPrefix(q, "evalsha ") && strings.Contains(q, " {inventory}:res:stray ") && !settled.Swap(true) {
				_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
					p.HIncrBy(ctx, "{inventory}:stock:a", "available", 1)
					p.Del(ctx, "{inventory}:res:stray")
					p.ZRem(ctx, "{inventory}:due", "stray")
					return nil
				})
				assert.NoError(t, err)
			}
			return testenv.Cut{}
		})
	})
	proxied := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), DB: opts.DB, MaxRetries: -1})
	t.Cleanup(func() { proxied.Close() })
	d := testkit.Must(redisinventory.NewDurable(proxied, db))(t)
	_, err = d.Heal(ctx)
	require.NoError(t, err)

	later := time.Now().Add(2 * time.Minute)
	require.NoError(t, redisinventory.SweepStrays(ctx, d, later, 10))
	require.True(t, settled.Load(), "the settle script of the stray was sent")
	wantStock(t, inv, "a", 2, 2, 0)
	n, err := d.Expire(ctx, later, 10)
	require.NoError(t, err)
	require.Zero(t, n)
}
