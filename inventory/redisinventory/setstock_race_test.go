package redisinventory_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// scriptFirst runs fn once, before the first script call of the client whose keys name
// key: the Redis step of a change that its journal transaction committed already.
type scriptFirst struct {
	key  string
	fn   func()
	done atomic.Bool
}

func (h *scriptFirst) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *scriptFirst) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); (name == "evalsha" || name == "eval") && h.names(cmd) && h.done.CompareAndSwap(false, true) {
			h.fn()
		}
		return next(ctx, cmd)
	}
}

func (h *scriptFirst) names(cmd redis.Cmder) bool {
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.HasSuffix(s, h.key) {
			return true
		}
	}
	return false
}

func (h *scriptFirst) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestDurableSetStockBeforeTheRedisStep: a change that gives units back (a restock, a
// Return) commits in the journal, and an admin's SetStock, in another process, takes the
// generation's lock once it has, sets the on-hand count in the journal and in Redis and
// commits, all before the change's Redis step. The journal orders the setting after the
// change: its absolute count holds, 7 on hand. Whatever the change's caller is answered,
// once the heal it may have asked for has run, Redis must hold those 7, not the setting
// plus the change's units again, which it would sell though the journal has none of them.
// The setting may instead be refused as a dependency failure (a Return's units are sold in
// Redis and not in the journal until its Redis step): the admin then retries it, once the
// heal that refusal asked for in the admin's process has run.
func TestDurableSetStockBeforeTheRedisStep(t *testing.T) {
	for _, tc := range []struct {
		name, key string
		change    func(context.Context, *inventory.Inventory) error
	}{
		{"restock", ":adj:restock-1", func(ctx context.Context, inv *inventory.Inventory) error {
			_, err := inv.Adjust(ctx, inventory.Adjustment{ID: "restock-1", SKU: "mug", Delta: 4, Reason: "restock"})
			return err
		}},
		{"return", ":res:order-1", func(ctx context.Context, inv *inventory.Inventory) error {
			return inv.Return(ctx, "order-1")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			d, rdb, db := newDurable(t)
			inv := testkit.Must(inventory.New(d))(t)
			setStock(t, inv, "mug", 5, 0)
			_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "order-1", Lines: line("mug", 2), TTL: time.Hour})
			require.NoError(t, err)
			require.NoError(t, inv.Commit(ctx, "order-1")) // 3 on hand, 2 sold
			// The admin's process: a Durable of its own, on a Redis client of its own.
			other := redis.NewClient(rdb.Options())
			t.Cleanup(func() { _ = other.Close() })
			adminD := testkit.Must(redisinventory.NewDurable(other, db))(t)
			admin := testkit.Must(inventory.New(adminD))(t)
			var refused error
			rdb.AddHook(&scriptFirst{key: tc.key, fn: func() {
				_, refused = admin.SetStock(ctx, inventory.StockSetting{SKU: "mug", OnHand: 7})
			}})

			if err := tc.change(ctx, inv); err != nil {
				requireRebuilding(t, err)
			}
			for _, d := range []*redisinventory.Durable{d, adminD} {
				_, err = d.Heal(ctx) // what Run does when an operation woke it
				require.NoError(t, err)
			}
			if refused != nil {
				requireRebuilding(t, refused)
				setStock(t, admin, "mug", 7, 0)
			}
			counts := func() [2]int64 {
				st, err := inv.Stock(ctx, "mug")
				require.NoError(t, err)
				return [2]int64{st.OnHand, st.Available}
			}
			held := counts()
			_, err = d.Rebuild(ctx) // Redis written anew from the journal
			require.NoError(t, err)
			require.Equal(t, [2]int64{7, 7}, counts(), "the journal: on hand, available")
			require.Equal(t, [2]int64{7, 7}, held, "Redis before the rebuild: on hand, available")
		})
	}
}

// replyHook calls after with every command the client has run.
type replyHook struct{ after func(redis.Cmder) }

func (h *replyHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *replyHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.after(cmd)
		return err
	}
}

func (h *replyHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestDurableSetStockWaitsForAReturnsRedisStep: an admin's SetStock, in another process,
// takes the generation's lock between a Return's journal commit and its Redis step, and
// finds Redis's sold count ahead of the journal's committed units by the Return's. The
// Return's step is a moment away and needs no lock the setting holds: the setting waits
// for it and sets the count, rather than fail and have the whole of Redis rebuilt.
func TestDurableSetStockWaitsForAReturnsRedisStep(t *testing.T) {
	ctx := context.Background()
	d, rdb, db := newDurable(t)
	inv := testkit.Must(inventory.New(d))(t)
	setStock(t, inv, "mug", 5, 0)
	_, err := inv.Reserve(ctx, inventory.ReserveRequest{ID: "order-1", Lines: line("mug", 2), TTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, inv.Commit(ctx, "order-1")) // 3 on hand, 2 sold

	other := redis.NewClient(rdb.Options())
	t.Cleanup(func() { _ = other.Close() })
	soldAhead := make(chan struct{})
	var once sync.Once
	other.AddHook(&replyHook{after: func(cmd redis.Cmder) {
		if c, ok := cmd.(*redis.Cmd); ok {
			if r, _ := c.Val().([]any); len(r) > 0 && r[0] == int64(-11) {
				once.Do(func() { close(soldAhead) })
			}
		}
	}})
	admin := testkit.Must(inventory.New(testkit.Must(redisinventory.NewDurable(other, db))(t)))(t)
	set := make(chan error, 1)
	rdb.AddHook(&scriptFirst{key: ":res:order-1", fn: func() {
		go func() {
			_, err := admin.SetStock(ctx, inventory.StockSetting{SKU: "mug", OnHand: 7})
			set <- err
		}()
		select { // the Return's Redis step runs once the setting has seen it missing
		case <-soldAhead:
		case err := <-set:
			set <- err
		}
	}})

	require.NoError(t, inv.Return(ctx, "order-1"))
	require.NoError(t, <-set, "the setting waits for the Return's Redis step")
	st, err := inv.Stock(ctx, "mug")
	require.NoError(t, err)
	require.Equal(t, [3]int64{7, 7, 0}, [3]int64{st.OnHand, st.Available, st.Sold}, "Redis: on hand, available, sold")
	_, err = d.Rebuild(ctx) // Redis written anew from the journal
	require.NoError(t, err)
	st, err = inv.Stock(ctx, "mug")
	require.NoError(t, err)
	require.Equal(t, [3]int64{7, 7, 0}, [3]int64{st.OnHand, st.Available, st.Sold}, "the journal: on hand, available, sold")
}
