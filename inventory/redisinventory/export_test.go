package redisinventory

import (
	"context"
	"time"

	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/internal/groupcommit"
)

// SetHook sets the test hook a Durable's writers run inside their transaction after their
// Redis step.
func SetHook(d *Durable, f func(op, id string)) { d.hook = f }

// SetMaxBatch sets the most reservations one script call (plain) or journal transaction
// (Durable: of reservations, and of resolutions) carries; 1 turns the combining off.
func SetMaxBatch(b inventory.Backend, n int) {
	switch b := b.(type) {
	case *Backend:
		b.group.SetMaxBatch(n)
	case *Durable:
		b.group.SetMaxBatch(n)
		b.resolves.SetMaxBatch(n)
	}
}

// SweepStrays runs a Durable's sweep of Redis reservations the journal does not hold live.
func SweepStrays(ctx context.Context, d *Durable, now time.Time, limit int) error {
	return d.sweepStrays(ctx, now, limit)
}

// ReserveBatch reserves rs (built as inventory.Inventory builds them) in one batch, as if
// they had queued together: one script call (plain), or one journal transaction with one
// script call (Durable). It returns each one's answer.
func ReserveBatch(ctx context.Context, be inventory.Backend, rs ...inventory.Reservation) ([]inventory.Reservation, []error) {
	calls := make([]*groupcommit.Call, len(rs))
	for i, r := range rs {
		calls[i] = &groupcommit.Call{Ctx: ctx, R: r}
	}
	switch be := be.(type) {
	case *Backend:
		be.reserveMany(ctx, calls, nil)
	case *Durable:
		fail := func(ctx context.Context, err error) error { return be.fail(ctx, "reserve", err) }
		groupcommit.InTx(be.db, be.reserveBatch, fail)(ctx, calls, func() {})
	}
	out, errs := make([]inventory.Reservation, len(calls)), make([]error, len(calls))
	for i, c := range calls {
		out[i], errs[i] = c.Out, c.Err
	}
	return out, errs
}

// Resolution is one call of ResolveBatch: reservation ID to To (committed, released or
// returned) at Now.
type Resolution struct {
	ID  string
	To  inventory.State
	Now time.Time
}

// ResolveBatch resolves xs (distinct IDs) in one journal transaction of d, as if they had
// queued together, and returns each one's answer.
func ResolveBatch(ctx context.Context, d *Durable, xs ...Resolution) ([]inventory.State, []error) {
	calls := make([]*groupcommit.Call, len(xs))
	for i, x := range xs {
		calls[i] = &groupcommit.Call{Ctx: ctx, R: inventory.Reservation{ID: x.ID, State: x.To, ResolvedAt: x.Now}}
	}
	d.resolveRun(ctx, calls, func() {})
	out, errs := make([]inventory.State, len(calls)), make([]error, len(calls))
	for i, c := range calls {
		out[i], errs[i] = c.Out.State, c.Err
	}
	return out, errs
}

// ReserveStats returns how many script calls (plain) or journal transactions (Durable) the
// reservations of be ran and how many reservations they carried.
func ReserveStats(be inventory.Backend) (batches, calls int64) {
	switch be := be.(type) {
	case *Backend:
		return be.group.Stats()
	case *Durable:
		return be.group.Stats()
	}
	return 0, 0
}

// ResolveStats returns how many journal transactions a Durable's commits, releases and
// returns ran and how many calls they carried.
func ResolveStats(d *Durable) (batches, calls int64) { return d.resolves.Stats() }
