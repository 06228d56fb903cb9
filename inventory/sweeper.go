package inventory

import (
	"context"
	"time"

	"github.com/commercekit/commercekit/observe"
)

// Sweep expires every reservation whose deadline has passed (by the Inventory's clock),
// giving its units and buyer allowance back, in batches of the sweep batch size, and
// returns how many it expired. Concurrent sweeps (several processes) are safe: each
// reservation expires once.
func (inv *Inventory) Sweep(ctx context.Context) (int, error) {
	start := inv.start()
	now := inv.now()
	total := 0
	var err error
	for {
		var n int
		n, err = inv.b.Expire(ctx, now, inv.cfg.sweepBatch)
		total += n
		if err != nil || n < inv.cfg.sweepBatch {
			break
		}
	}
	if total > 0 && inv.cfg.obs != nil {
		inv.cfg.obs.Observe(observe.Expired("inventory", "reservation", total))
	}
	inv.observe(OpSweep, start, err)
	return total, err
}

// Run sweeps at once and then every sweep interval until ctx is done, then returns nil.
// Sweep failures are logged and retried at the next tick. Run it in its own goroutine.
func (inv *Inventory) Run(ctx context.Context) error {
	t := time.NewTicker(inv.cfg.sweepEvery)
	defer t.Stop()
	for {
		n, err := inv.Sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			inv.cfg.log.ErrorContext(ctx, "inventory: sweep failed", "expired", n, "error", err)
		case n > 0:
			inv.cfg.log.DebugContext(ctx, "inventory: sweep", "expired", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
