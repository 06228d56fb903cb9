package redisinventory

import (
	"context"
	"time"

	"github.com/commercekit/commercekit/inventory"
)

// SetHook sets the test hook a Durable's writers run inside their transaction after their
// Redis step.
func SetHook(d *Durable, f func(op, id string)) { d.hook = f }

// SetMaxBatch sets the most reservations one script call (plain) or journal transaction
// (Durable) carries; 1 turns the combining off.
func SetMaxBatch(b inventory.Backend, n int) {
	switch b := b.(type) {
	case *Backend:
		b.group.SetMaxBatch(n)
	case *Durable:
		b.group.SetMaxBatch(n)
	}
}

// SweepStrays runs a Durable's sweep of Redis reservations the journal does not hold live.
func SweepStrays(ctx context.Context, d *Durable, now time.Time, limit int) error {
	return d.sweepStrays(ctx, now, limit)
}
