package sqlidempotency

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/payment/idempotency"
)

// Backend is an idempotency.Backend on a SQL database through bun (MySQL/MariaDB or
// SQLite), in the table made by CreateSchema. It is safe for concurrent use.
type Backend struct {
	db bun.IDB
}

var _ idempotency.Backend = (*Backend)(nil)

// New returns a backend on db. Call CreateSchema once before using it.
func New(db bun.IDB) *Backend { return &Backend{db: db} }

// WithTx returns a copy of b whose operations run on db: in the caller's transaction when
// db is a bun.Tx, so that, e.g., a Complete commits or rolls back together with the
// caller's own writes (see idempotency.Store.WithBackend). On SQLite with a single
// connection, do everything through the transaction while it is open.
func (b *Backend) WithTx(db bun.IDB) *Backend { return &Backend{db: db} }

// JoinsTx reports true: the backend can run in the caller's transaction.
func (b *Backend) JoinsTx() bool { return true }

const (
	stateRunning = "running"
	stateDone    = "done"

	// maxClaimRounds bounds how often Claim looks again after losing a race with a
	// concurrent writer; each lost round means another request made progress.
	maxClaimRounds = 16

	// purgeBatch is how many records one purge statement deletes, so locks stay short.
	purgeBatch = 1000
)

type row struct {
	bun.BaseModel `bun:"table:payment_idempotency_keys,alias:k"`

	ID          string    `bun:"id,pk"`
	Scope       string    `bun:"scope"`
	Key         string    `bun:"idem_key"`
	Fingerprint string    `bun:"fingerprint"`
	Token       string    `bun:"token"`
	State       string    `bun:"state"`
	LockedUntil time.Time `bun:"locked_until"`
	ExpiresAt   time.Time `bun:"expires_at"`
	Status      int       `bun:"status"`
	ErrorCode   string    `bun:"error_code"`
	Body        []byte    `bun:"body"`
	CreatedAt   time.Time `bun:"created_at"`
	UpdatedAt   time.Time `bun:"updated_at"`
}

func (r *row) record() *idempotency.Record {
	rec := &idempotency.Record{
		Fingerprint: idempotency.Fingerprint(r.Fingerprint),
		Done:        r.State == stateDone,
		LockedUntil: r.LockedUntil,
		ExpiresAt:   r.ExpiresAt,
	}
	if rec.Done {
		rec.Response = idempotency.Response{Status: r.Status, ErrorCode: r.ErrorCode, Body: r.Body}
	}
	return rec
}

// Claim implements idempotency.Backend without holding a transaction, optimistically:
// it inserts a fresh record (one round trip for a new key, the common case); when the key
// exists it reads the record, decides, and overwrites it only if it is still what it read
// (an UPDATE conditioned on its token and state). A lost race starts again.
func (b *Backend) Claim(ctx context.Context, q idempotency.ClaimRequest) (idempotency.ClaimOutcome, *idempotency.Record, error) {
	next := &row{
		ID: q.Ref.ID(), Scope: q.Ref.Scope, Key: q.Ref.Key, Fingerprint: string(q.Fingerprint),
		Token: q.Token, State: stateRunning,
		LockedUntil: q.LockedUntil.UTC(), ExpiresAt: q.ExpiresAt.UTC(),
		CreatedAt: q.Now.UTC(), UpdatedAt: q.Now.UTC(),
	}
	for range maxClaimRounds {
		won, err := b.insert(ctx, next)
		if err != nil {
			return 0, nil, err
		}
		if won {
			return idempotency.ClaimCreated, nil, nil
		}
		cur, err := b.load(ctx, next.ID)
		if err != nil {
			return 0, nil, err
		}
		if cur == nil {
			continue // deleted since the insert failed
		}
		if cur.Token == q.Token && cur.State == stateRunning {
			return idempotency.ClaimCreated, nil, nil // this claim, tried again
		}
		rec := cur.record()
		outcome := q.Decide(rec)
		if outcome == idempotency.ClaimExists {
			return outcome, rec, nil
		}
		next.CreatedAt = q.Now.UTC()
		if outcome == idempotency.ClaimTakenOver {
			next.CreatedAt = cur.CreatedAt
		}
		won, err = b.replace(ctx, next, cur)
		if err != nil {
			return 0, nil, err
		}
		if won {
			return outcome, nil, nil
		}
	}
	return 0, nil, fmt.Errorf("sqlidempotency: claim of (%q, %q) lost %d races in a row", q.Ref.Scope, q.Ref.Key, maxClaimRounds)
}

// load reads the record id, or nil. Inside a transaction on MySQL it locks the row, so the
// read sees the latest committed version rather than the transaction's snapshot.
func (b *Backend) load(ctx context.Context, id string) (*row, error) {
	r := new(row)
	q := b.db.NewSelect().Model(r).Where("id = ?", id)
	if sqlutil.IsTx(b.db) {
		q = sqlutil.ForUpdate(q)
	}
	if err := q.Scan(ctx); err != nil {
		if sqlutil.IsNoRows(err) {
			return nil, nil
		}
		return nil, b.wrap("reading a key", err)
	}
	return r, nil
}

// insert stores a fresh record; false when a concurrent claim inserted it first.
func (b *Backend) insert(ctx context.Context, r *row) (bool, error) {
	start := time.Now()
	_, err := b.db.NewInsert().Model(r).Exec(ctx)
	switch {
	case err == nil:
		return true, nil
	case sqlutil.IsDuplicateKey(err), racedAt(ctx, b.db, err, time.Since(start)):
		return false, nil
	}
	return false, b.wrap("claiming a key", err)
}

// racedAt reports whether err, a claim's insert or replace failing on db after took, is a
// concurrent claim of the same key winning (a deadlock on its index entry, a busy SQLite
// database), to read what it left and decide again. A lock wait timeout is not, nor a
// SQLite busy error after the connection's busy timeout (sqlutil.WaitedOut): the statement
// waited the server's whole lock wait behind another transaction, and another round would
// wait again; nor is anything in a caller's transaction, which the failure aborted.
func racedAt(ctx context.Context, db bun.IDB, err error, took time.Duration) bool {
	return sqlutil.IsRetryable(err) && !sqlutil.IsTx(db) && !sqlutil.WaitedOut(ctx, db, err, took)
}

// replace overwrites cur with next if cur is still what was read (same token and state:
// every write changes one of them); false when a concurrent writer changed it first.
func (b *Backend) replace(ctx context.Context, next, cur *row) (bool, error) {
	start := time.Now()
	res, err := b.db.NewUpdate().Model(next).ExcludeColumn("id").WherePK().
		Where("token = ?", cur.Token).Where("state = ?", cur.State).
		Exec(ctx)
	if err != nil {
		if racedAt(ctx, b.db, err, time.Since(start)) {
			return false, nil
		}
		return false, b.wrap("claiming a key", err)
	}
	return affected(res)
}

// Complete implements idempotency.Backend with one conditional UPDATE.
func (b *Backend) Complete(ctx context.Context, q idempotency.CompleteRequest) error {
	res, err := b.db.NewUpdate().Model((*row)(nil)).
		Set("state = ?", stateDone).
		Set("status = ?", q.Response.Status).
		Set("error_code = ?", q.Response.ErrorCode).
		Set("body = ?", q.Response.Body).
		Set("expires_at = ?", q.ExpiresAt.UTC()).
		Set("updated_at = ?", q.Now.UTC()).
		Where("id = ?", q.Ref.ID()).Where("token = ?", q.Token).Where("state = ?", stateRunning).
		Exec(ctx)
	if err != nil {
		return b.wrap("completing a key", err)
	}
	ok, err := affected(res)
	if err != nil || ok {
		return err
	}
	// Nothing was running under the token: succeed if this very completion is already
	// stored (a retry after a lost reply), else the claim is lost.
	cur, err := b.load(ctx, q.Ref.ID())
	if err != nil {
		return err
	}
	if cur != nil && cur.Token == q.Token && cur.State == stateDone && cur.Status == q.Response.Status &&
		cur.ErrorCode == q.Response.ErrorCode && bytes.Equal(cur.Body, q.Response.Body) {
		return nil
	}
	return idempotency.ErrLockLost
}

// Release implements idempotency.Backend with one conditional DELETE.
func (b *Backend) Release(ctx context.Context, ref idempotency.Ref, token string) error {
	res, err := b.db.NewDelete().Model((*row)(nil)).
		Where("id = ?", ref.ID()).Where("token = ?", token).Where("state = ?", stateRunning).
		Exec(ctx)
	if err != nil {
		return b.wrap("releasing a key", err)
	}
	return held(affected(res))
}

// Purge implements idempotency.Backend, deleting expired records purgeBatch at a time.
func (b *Backend) Purge(ctx context.Context, now time.Time) (int64, error) {
	now = now.UTC()
	var total int64
	for {
		var ids []string
		err := b.db.NewSelect().Model((*row)(nil)).Column("id").
			Where("expires_at <= ?", now).Limit(purgeBatch).Scan(ctx, &ids)
		if err != nil {
			return total, b.wrap("purging", err)
		}
		if len(ids) == 0 {
			return total, nil
		}
		// The condition is repeated: a record reclaimed since the SELECT is live again.
		res, err := b.db.NewDelete().Model((*row)(nil)).
			Where("id IN (?)", bun.List(ids)).Where("expires_at <= ?", now).
			Exec(ctx)
		if err != nil {
			return total, b.wrap("purging", err)
		}
		n, err := affected64(res)
		if err != nil {
			return total, err
		}
		total += n
		if len(ids) < purgeBatch {
			return total, nil
		}
	}
}

func affected64(res sql.Result) (int64, error) {
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sqlidempotency: counting affected rows: %w", err)
	}
	return n, nil
}

func affected(res sql.Result) (bool, error) {
	n, err := affected64(res)
	return n == 1, err
}

// held turns "no row matched the token" into the fencing error.
func held(ok bool, err error) error {
	if err == nil && !ok {
		return idempotency.ErrLockLost
	}
	return err
}

// wrap names the failed operation; context errors are returned as they are, and a lost or
// unreachable database matches errcode.ErrUnavailable.
func (b *Backend) wrap(op string, err error) error {
	if !depfail.Is(err) && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return err
	}
	return sqlutil.Unavailable(b.db, fmt.Errorf("sqlidempotency: %s: %w", op, err))
}
