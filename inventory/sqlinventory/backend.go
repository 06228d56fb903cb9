package sqlinventory

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/internal/groupcommit"
)

// Backend stores stock and reservations in SQL tables through bun (MySQL/MariaDB or
// SQLite). It implements inventory.TxBackend. Create its tables with CreateSchema.
type Backend struct {
	db bun.IDB
	// forUpdate is " FOR UPDATE" where the dialect has row locks, else "".
	forUpdate string
	// skipLocked is " FOR UPDATE SKIP LOCKED" where the dialect has it, else "".
	skipLocked string
	// shareLock is " LOCK IN SHARE MODE" where the dialect has row locks, else "".
	shareLock string
	// addUsageTail ends a multi-row INSERT of usage rows: the dialect's upsert, adding
	// to the rows that exist.
	addUsageTail string
	// group combines concurrent reservations of the same SKUs into one transaction; nil
	// when db is a transaction (the caller's: nothing else may join it) or in the
	// benchmarks of the direct path.
	group *groupcommit.Committer
	// lockFirst switches Reserve to SELECT ... FOR UPDATE, check, then UPDATE, instead
	// of a conditional UPDATE. It exists only to measure the two against each other.
	lockFirst bool
}

var _ inventory.TxBackend = (*Backend)(nil)

// New returns a Backend on db (a *bun.DB, or a bun.Tx to join the caller's transaction).
func New(db bun.IDB) *Backend {
	b := &Backend{db: db}
	if sqlutil.IsSQLite(db) {
		b.addUsageTail = ` ON CONFLICT (sku, buyer_id) DO UPDATE SET qty = qty + excluded.qty`
	} else {
		b.forUpdate, b.skipLocked, b.shareLock = " FOR UPDATE", " FOR UPDATE SKIP LOCKED", " LOCK IN SHARE MODE"
		b.addUsageTail = ` ON DUPLICATE KEY UPDATE qty = qty + VALUES(qty)`
	}
	if !sqlutil.IsTx(db) {
		b.group = groupcommit.New(groupcommit.InTx(db, b.reserveBatch, b.failReserve))
	}
	return b
}

// WithTx returns a copy of the backend whose operations run on db: inside the transaction
// (under a savepoint) when db is a bun.Tx, in transactions of their own otherwise.
func (b *Backend) WithTx(db bun.IDB) inventory.Backend {
	c := *b
	c.db = db
	switch {
	case sqlutil.IsTx(db):
		c.group = nil
	case db != b.db || b.group == nil:
		c.group = groupcommit.New(groupcommit.InTx(db, c.reserveBatch, c.failReserve))
	}
	return &c
}

// inTx runs fn in the caller's transaction or one of our own, retried on deadlocks and
// lock wait timeouts, and translates what fails into the inventory's errors.
func (b *Backend) inTx(ctx context.Context, op string, fn func(ctx context.Context, tx bun.Tx) error) error {
	return b.fail(ctx, op, sqlutil.InTx(ctx, b.db, fn))
}

func (b *Backend) failReserve(ctx context.Context, err error) error {
	return b.fail(ctx, "reserve", err)
}

// domainErrors are the errors the backend itself builds; they pass through unchanged.
var domainErrors = []error{
	inventory.ErrUnknownSKU, inventory.ErrInsufficientStock, inventory.ErrBuyerLimitExceeded,
	inventory.ErrIdempotencyConflict, inventory.ErrReservationNotFound, inventory.ErrInvalidRequest,
}

// fail translates a native error: domain errors as they are, the context's error when it
// is done, lock conflicts as inventory.ErrContention, anything else wrapped with op (and
// matching errcode.ErrUnavailable when the database could not be reached: depfail).
func (b *Backend) fail(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	for _, d := range domainErrors {
		if errors.Is(err, d) {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if sqlutil.IsRetryable(err) {
		return inventory.Contention(err)
	}
	return fmt.Errorf("sqlinventory: %s: %w", op, sqlutil.Unavailable(b.db, err))
}

func millis(t time.Time) int64 { return t.UnixMilli() }
