package redisinventory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/backoff"
	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/redisserver"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/internal/groupcommit"
	"github.com/commercekit/commercekit/inventory/internal/sqlrow"
)

// RebuildRetryAfter is the Retry-After a Durable's callers get while Redis is rebuilt.
const RebuildRetryAfter = 2 * time.Second

// DependencyRebuilding names the dependency of the errors a Durable returns while its Redis
// lost data or is being rebuilt from SQL.
const DependencyRebuilding = "redis (stock rebuilding)"

// Durable is the Redis inventory with SQL as its system of record: every reservation is a
// row of a SQL journal and every on-hand change a journal entry, so Redis holds only what
// can be derived from SQL, and a Redis that lost data is detected and rebuilt from it
// (Heal, Rebuild, Run). It implements inventory.Backend; see the package doc.
type Durable struct {
	b  *Backend
	db *bun.DB
	// marker is the key holding the generation Redis was built for; runKey the one holding the
	// run ID of the server the last rebuild wrote on; fence the one holding the generation
	// of the rebuild whose writes Redis takes (see fenced).
	marker, runKey, fence string
	// shareLock, forUpdate and skipLocked are the dialect's locking clauses ("" in SQLite).
	shareLock, forUpdate, skipLocked string
	log                              *slog.Logger
	// gen caches the generation last read from SQL, for reads that do not touch SQL.
	gen atomic.Int64
	// wake asks Run for a heal; forced says a SKU key was missing under a good marker.
	wake       chan struct{}
	forced     atomic.Bool
	rebuilding atomic.Bool
	// healing serializes the heals of this process; healed is the run ID of the Redis
	// server the last one built or confirmed, server the server the client reaches now
	// (see sameServer).
	healing sync.Mutex
	healed  atomic.Pointer[string]
	// waiting admits one change at a time to try the rebuild lock (see underRebuildLock).
	waiting chan struct{}
	server  *redisserver.Watch
	// group shares SQL transactions between concurrent reservations, resolves between
	// concurrent commits, releases and returns.
	group, resolves *groupcommit.Committer
	// hook, when set (tests), runs inside a writer's transaction after its Redis step.
	hook func(op, id string)
}

var _ inventory.Backend = (*Durable)(nil)

// NewDurable returns a Redis inventory on c journaled in db (MySQL/MariaDB: the
// generation protocol relies on its row locks; create the tables with CreateJournal). The
// options are those of New; WithLogger's logger reports rebuilds. Call Heal once at start
// (it builds Redis from SQL when Redis does not hold the current generation) and run Run in
// the background.
func NewDurable(c redis.UniversalClient, db *bun.DB, opts ...Option) (*Durable, error) {
	b, err := New(c, opts...)
	if err != nil {
		return nil, err
	}
	d := &Durable{b: b, db: db, marker: b.prefix + "generation", runKey: b.prefix + "run", fence: b.prefix + "rebuilder", log: b.log, wake: make(chan struct{}, 1),
		waiting: make(chan struct{}, 1)}
	d.server = redisserver.NewWatch(b.c, d.marker)
	if !sqlutil.IsSQLite(db) {
		d.shareLock, d.forUpdate, d.skipLocked = " LOCK IN SHARE MODE", " FOR UPDATE", " FOR UPDATE SKIP LOCKED"
	}
	d.group = groupcommit.New(groupcommit.InTx(db, d.reserveBatch, func(ctx context.Context, err error) error { return d.fail(ctx, "reserve", err) }))
	d.resolves = groupcommit.New(d.resolveRun)
	return d, nil
}

// lost is the error of an operation that found Redis without the current generation: it
// asks the healer for a rebuild and fails closed, with a retry hint. A key missing under a
// good marker forces the heal to rebuild (unless this process is rebuilding); a marker
// that is not the caller's generation (errMarker) does not: the heal sees a marker other
// than the journal's generation by itself, and one equal to it means a rebuild, in any
// process, or a SetStock, moved Redis on since the caller's read, which a rebuild would
// not change. Forcing there would have every process whose traffic met another's rebuild
// rebuild in turn.
func (d *Durable) lost(err error) error {
	if !d.rebuilding.Load() && !errors.Is(err, errMarker) {
		d.forced.Store(true)
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return &errcode.UnavailableError{Dependency: DependencyRebuilding, RetryAfter: RebuildRetryAfter, Err: err}
}

// behind is lost for a change the journal has committed and whose Redis step failed
// without telling whether it ran (a release, expiry, return or positive adjustment): it
// asks for a rebuild even while one is under way, since a replay changes nothing in
// Redis (a Return's replay assumes Redis returned the units). It asks in the journal too
// (markBehind), so that the rebuild is made even if this process dies before its heal.
func (d *Durable) behind(ctx context.Context, err error) error {
	d.forced.Store(true)
	if merr := d.markBehind(ctx); merr != nil {
		d.log.ErrorContext(ctx, "redisinventory: recording that Redis is behind the journal failed; only this process will rebuild",
			"err", merr)
	}
	return d.lost(err)
}

// errBehind is the error of a read that would answer from a Redis known to miss changes
// the journal holds, before the rebuild asked for has run.
var errBehind = fmt.Errorf("%w: a rebuild asked for after a missed Redis step has not run yet", errLost)

// notBehind returns errBehind while a rebuild is asked for, in this process or, through the
// journal's row 'behind', in any.
func (d *Durable) notBehind(ctx context.Context) error {
	if d.forced.Load() {
		return errBehind
	}
	_, behind, err := d.healState(ctx)
	switch {
	case err != nil:
		return err
	case behind:
		return errBehind
	}
	return nil
}

// markBehindTimeout bounds markBehind, which runs on a failure's path, when the database
// may be failing too.
const markBehindTimeout = time.Second

// markBehind records in the row 'behind' the journal's generation now, which is at least
// the one the change that calls it committed under: until a rebuild bumps the generation
// past it (and so reads the journal with the change in it; see heal), every process's
// heal rebuilds. It runs whether or not the caller is still there.
func (d *Durable) markBehind(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markBehindTimeout)
	defer cancel()
	gen, err := d.currentGen(ctx)
	if err != nil {
		return err
	}
	_, err = d.db.ExecContext(ctx, `UPDATE inventory_journal_generation SET gen = ? WHERE name = 'behind' AND gen < ?`, gen, gen)
	return err
}

// DefaultRebuildWait is how long a change whose Redis step the generation guard refused
// waits for the rebuild lock unless WithRebuildWait says otherwise: more than a rebuild of
// BenchmarkRebuild's 5,000 SKUs takes (1.2 s measured), far less than a server's lock wait
// timeout (50 s by default).
const DefaultRebuildWait = 3 * time.Second

// The first and the longest pause between two tries of the rebuild lock (afterRebuild),
// and how long, once the wait has run out, the look at the row 'built' may take.
const (
	rebuildPollFirst = 10 * time.Millisecond
	rebuildPollMax   = 200 * time.Millisecond
	rebuildLastLook  = time.Second
)

// errRebuildWait is the error of a change whose Redis step waited for the rebuild lock as
// long as WithRebuildWait allows, with no rebuild recorded that read it.
var errRebuildWait = errors.New("the rebuild lock is still held after the rebuild wait (WithRebuildWait)")

// afterRebuild runs the Redis step of a change the journal committed under gen, which the
// guard refused, again once the heal (and rebuild) under way, if any, in any process, has
// ended. It holds the rebuild lock every heal takes (SQLite, one process: the heal's mutex)
// meanwhile, so no rebuild starts before the step has run, and reads the generation of the
// last rebuild whose bump committed (the row 'built', written in the bump's transaction):
//
//   - past gen: that rebuild read the journal with the change in it (its bump waited for
//     the change's commit), and Redis, unless it lost data since, which fails it closed
//     until a later rebuild, holds it: done, and again is not called;
//   - otherwise no rebuild read the change: Redis's generation moved on, if it did, only by
//     SetStocks, which keep what Redis holds, so again runs the step guarded by the
//     journal's generation now (a marker other than it, gone or ahead, still refuses it).
//     A journal without the row (created before it) runs it under gen, as before.
//     Not so a step that adds to the on-hand count of one of onHand (a restock, a Return)
//     when a SetStock of that SKU committed past gen (the generation setStockGuardedLua
//     records in its stock hash): the setting waited for the change's commit and set the
//     count absolutely from the journal with the change in it, so the step would add the
//     change's units again. again is not called, and errSetSince is returned: the caller
//     asks for a rebuild (behind), which writes the rest of the change (sold units, buyer
//     usage, the record) from the journal.
//     Every process must record its rebuilds so: a rebuild by a version that does not
//     (during a rolling upgrade) looks like a SetStock here, and the step would run again
//     on a Redis that holds it already.
//
// The wait is bounded (WithRebuildWait, default DefaultRebuildWait), and holds no database
// connection: see underRebuildLock. When it runs out (a rebuild of a large catalogue, or a
// heal stuck on Redis, holds the lock), the row 'built' is read without the lock: past gen,
// the rebuild holding the lock, or one since, read the change, and it is done as above (a
// rebuild still writing Redis fails every caller closed until its marker is set, and one
// that fails leaves Redis failing closed until the next). Otherwise errRebuildWait is
// returned and again is not called: the step never runs, and the caller asks for a
// rebuild (behind), which, like every rebuild, writes Redis anew from the journal, the
// change in it, once.
//
// A failure to take the lock or read the rows is returned, and again is not called: the
// caller then asks for a rebuild (behind), whether or not one is under way in this process.
func (d *Durable) afterRebuild(ctx context.Context, gen string, onHand []string, again func(gen string)) (bool, error) {
	g, err := strconv.ParseInt(gen, 10, 64)
	if err != nil {
		return false, fmt.Errorf("redisinventory: waiting for the rebuild: %w", err)
	}
	var done bool
	step := func(ctx context.Context, db bun.IDB) error {
		var built, now int64
		switch err := db.QueryRowContext(ctx, `SELECT gen FROM inventory_journal_generation WHERE name = 'built'`).Scan(&built); {
		case sqlutil.IsNoRows(err):
			again(gen)
			return nil
		case err != nil:
			return err
		case built > g:
			done = true
			return nil
		}
		if err := db.QueryRowContext(ctx, `SELECT gen FROM inventory_journal_generation WHERE name = 'gen'`).Scan(&now); err != nil {
			return err
		}
		switch set, err := d.setSince(ctx, onHand, g); {
		case err != nil:
			return err
		case set:
			return errSetSince
		}
		again(strconv.FormatInt(now, 10))
		return nil
	}
	locked, err := d.underRebuildLock(ctx, step)
	switch {
	case err != nil:
		return false, fmt.Errorf("redisinventory: waiting for the rebuild: %w", err)
	case locked:
		return done, nil
	}
	lookCtx, cancel := context.WithTimeout(ctx, rebuildLastLook)
	defer cancel()
	var built int64
	switch err := d.db.QueryRowContext(lookCtx, `SELECT gen FROM inventory_journal_generation WHERE name = 'built'`).Scan(&built); {
	case err == nil && built > g:
		return true, nil
	case err != nil && !sqlutil.IsNoRows(err):
		return false, fmt.Errorf("redisinventory: waiting for the rebuild: %w (then: %w)", errRebuildWait, err)
	}
	return false, fmt.Errorf("redisinventory: waiting for the rebuild: %w", errRebuildWait)
}

// errSetSince is afterRebuild's refusal to run again a step that would add units to an
// on-hand count a later SetStock set from the journal with the change in it.
var errSetSince = fmt.Errorf("%w: a SetStock of its SKU read the journal with the change in it", errMarker)

// setSince reports whether a SetStock committed under a generation past gen set the stock
// of one of skus in Redis: the generation setStockGuardedLua records in the stock hash. A
// SetStock that committed before the journal's generation the caller read has its script
// run, so its record is there; one that had not committed then has moved the marker past
// that generation, which the caller's guarded step refuses.
func (d *Durable) setSince(ctx context.Context, skus []string, gen int64) (bool, error) {
	if len(skus) == 0 {
		return false, nil
	}
	cmds := make([]*redis.StringCmd, len(skus))
	_, err := d.b.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sku := range skus {
			cmds[i] = p.HGet(ctx, d.b.stockKey(sku), setGenField)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, redisErr(ctx, err)
	}
	for _, c := range cmds {
		if set, err := c.Int64(); err == nil && set > gen {
			return true, nil
		}
	}
	return false, nil
}

// underRebuildLock runs fn holding the rebuild lock if it gets the lock within
// WithRebuildWait, and reports whether it did. It waits without holding a database
// connection, so changes waiting for a rebuild never take the connections a rebuild (or
// the heal that needs two) is waiting for: it tries the lock without waiting for it (FOR
// UPDATE SKIP LOCKED; SQLite: TryLock of the heal's mutex), on a connection taken for the
// try only, and pauses between tries (from rebuildPollFirst, doubling up to
// rebuildPollMax). Only one caller per Durable tries at a time; the others wait in the
// process (d.waiting), so a process polls the database once per pause however many
// changes wait. fn runs with ctx, not bounded by the wait: once it holds the lock, the step
// it runs takes as long as it takes.
func (d *Durable) underRebuildLock(ctx context.Context, fn func(ctx context.Context, db bun.IDB) error) (bool, error) {
	waitCtx, cancel := context.WithTimeout(ctx, d.b.rebuildWait)
	defer cancel()
	gaveUp := func() (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		return false, nil
	}
	select {
	case d.waiting <- struct{}{}:
	default:
		select {
		case d.waiting <- struct{}{}:
		case <-waitCtx.Done():
			return gaveUp()
		}
	}
	defer func() { <-d.waiting }()
	for pause := rebuildPollFirst; ; pause = min(2*pause, rebuildPollMax) {
		locked, err := d.tryRebuildLock(ctx, waitCtx, fn)
		if locked || err != nil {
			return locked, err
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-waitCtx.Done():
			t.Stop()
			return gaveUp()
		}
	}
}

// tryRebuildLock runs fn holding the rebuild lock if it is free, and reports whether it
// was. The connection is taken from the pool within waitCtx; a pool that has none to give
// before it ends counts as a held lock.
func (d *Durable) tryRebuildLock(ctx, waitCtx context.Context, fn func(ctx context.Context, db bun.IDB) error) (bool, error) {
	if d.forUpdate == "" {
		if !d.healing.TryLock() {
			return false, nil
		}
		defer d.healing.Unlock()
		return true, fn(ctx, d.db)
	}
	conn, err := d.db.Conn(waitCtx)
	if err != nil {
		if waitCtx.Err() != nil {
			return false, nil
		}
		return false, err
	}
	defer conn.Close()
	var locked bool
	// Not sqlutil.InTx: a retry would run the step twice.
	err = conn.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var n int64
		err := tx.QueryRowContext(ctx, `SELECT gen FROM inventory_journal_generation WHERE name = 'rebuild'`+d.skipLocked).Scan(&n)
		if sqlutil.IsNoRows(err) {
			return nil // a rebuild, or a heal, holds it
		}
		if err != nil {
			return err
		}
		locked = true
		return fn(ctx, tx)
	})
	return locked, err
}

// fail translates what an operation met: domain errors and context errors as they are,
// lost data as lost, lock conflicts as inventory.ErrContention, Redis and database
// failures as errcode.ErrUnavailable, anything else wrapped with op.
func (d *Durable) fail(ctx context.Context, op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errLost):
		return d.lost(err)
	case isDomain(err), errors.Is(err, errcode.ErrUnavailable):
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	case sqlutil.IsRetryable(err):
		return inventory.Contention(err)
	}
	// What is left failed in the journal (or elsewhere): a database that could not be
	// reached matches errcode.ErrUnavailable (depfail), like a Redis failure.
	return fmt.Errorf("redisinventory: %s: %w", op, sqlutil.Unavailable(d.db, err))
}

func isDomain(err error) bool {
	for _, d := range []error{
		inventory.ErrUnknownSKU, inventory.ErrInsufficientStock, inventory.ErrBuyerLimitExceeded,
		inventory.ErrIdempotencyConflict, inventory.ErrReservationNotFound, inventory.ErrInvalidRequest,
	} {
		if errors.Is(err, d) {
			return true
		}
	}
	return false
}

// redisErr marks a failed Redis call as a dependency failure (a context error stays itself).
func redisErr(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, errLost) || ctx.Err() != nil {
		return err
	}
	if wrongType(err) {
		// A key of the inventory holding another type (written by something else, or a
		// partial restore) is no outage a retry outlives: it is lost data, and the rebuild
		// writes every key anew from the journal.
		return fmt.Errorf("%w: %w", errLost, err)
	}
	return errcode.Unavailable("redis", err)
}

// wrongType reports whether err is Redis's answer to a command on a key of another type.
func wrongType(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.Contains(rerr.Error(), "WRONGTYPE")
}

// inTx runs fn in a transaction of the journal's own, retried on lock conflicts.
func (d *Durable) inTx(ctx context.Context, op string, fn func(ctx context.Context, tx bun.Tx) error) error {
	return d.fail(ctx, op, sqlutil.InTx(ctx, d.db, fn))
}

// hold reads the generation with a shared lock held until tx ends: a rebuild, which bumps
// the generation under an exclusive lock, waits for every writer holding it, so no write
// made in Redis under the old generation can reach SQL after the rebuild read SQL.
func (d *Durable) hold(ctx context.Context, tx bun.Tx) (string, error) {
	var gen int64
	err := tx.QueryRowContext(ctx, `SELECT gen FROM inventory_journal_generation WHERE name = 'gen'`+d.shareLock).Scan(&gen)
	if sqlutil.IsNoRows(err) {
		return "", errors.New("redisinventory: no generation row: run CreateJournal")
	}
	d.gen.Store(gen)
	return strconv.FormatInt(gen, 10), err
}

// guard is the marker key and generation a guarded script checks.
func (d *Durable) guard(gen string) []string { return []string{d.marker, gen} }

// run runs a guarded script with the generation appended.
func (d *Durable) run(ctx context.Context, s *redis.Script, gen string, keys []string, args ...any) (any, error) {
	reply, err := s.Run(ctx, d.b.c, append(keys, d.marker), append(args, gen)...).Result()
	return reply, redisErr(ctx, err)
}

// known reports whether the journal has stock for sku: a SKU Redis lacks but SQL knows
// means Redis lost data.
func (d *Durable) known(ctx context.Context, db bun.IDB, skus ...string) (bool, error) {
	var n int
	err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM inventory_journal_stock WHERE sku IN (?)`, bun.List(skus)).Scan(&n)
	return n > 0, err
}

// Reserve records the reservation in the journal, then takes its units in Redis with the
// reserve script, in one SQL transaction holding the generation. Concurrent reservations share
// that transaction (groupcommit): one INSERT of their rows, one of their lines, a script each,
// one commit; a reservation Redis refuses is taken out of the journal again before the commit
// and fails alone. Their scripts run in one call (reserveManyLua). A reservation the journal
// has already is a replay and returns it as the journal has it.
func (d *Durable) Reserve(ctx context.Context, r inventory.Reservation) (inventory.Reservation, error) {
	return d.group.Reserve(ctx, "", r)
}

// reserveBatch is Reserve for a batch of reservations with distinct IDs, in tx.
func (d *Durable) reserveBatch(ctx context.Context, tx bun.Tx, calls []*groupcommit.Call) error {
	gen, err := d.hold(ctx, tx)
	if err != nil {
		return err
	}
	fresh, err := groupcommit.InsertRows(ctx, tx, "inventory_journal_reservations", calls, d.shareLock)
	if err != nil || len(fresh) == 0 {
		return err
	}
	var q strings.Builder
	q.WriteString(`INSERT INTO inventory_journal_lines (sku, reservation_id, qty) VALUES `)
	var values []any
	for _, c := range fresh {
		for _, l := range c.R.Lines {
			if len(values) > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?)")
			values = append(values, l.SKU, c.R.ID, l.Qty)
		}
	}
	if _, err := tx.ExecContext(ctx, q.String(), values...); err != nil {
		return err
	}
	replies, err := d.b.runReserveMany(ctx, d.b.g.reserveMany, fresh, []string{d.marker}, gen)
	if err != nil {
		return redisErr(ctx, err)
	}
	if err := d.sameServer(ctx); err != nil {
		return err // answered by a Redis the healer has not seen: maybe an older copy
	}
	var refused []*groupcommit.Call
	for i, c := range fresh {
		if c.Out, c.Err = reserveReply(c.R, replies[i]); c.Err != nil {
			if errors.Is(c.Err, errLost) {
				return c.Err // the generation moved: every reservation of the batch fails closed
			}
			if c.Err, err = d.refused(ctx, tx, c.Err); err != nil {
				return err
			}
			refused = append(refused, c)
			continue
		}
		d.after("reserve", c.R.ID)
	}
	return groupcommit.Refuse(ctx, tx, "inventory_journal_reservations", refused, "inventory_journal_lines")
}

// refused returns the error a caller gets for a reservation Redis refused with err: an
// unknown SKU the journal knows means Redis lost data (errLost, which fails the caller
// closed); err itself otherwise. A failed SQL read is returned as the transaction's error.
func (d *Durable) refused(ctx context.Context, tx bun.Tx, err error) (callerErr, txErr error) {
	var unknown *inventory.UnknownSKUError
	if !errors.As(err, &unknown) {
		return err, nil
	}
	ok, kerr := d.known(ctx, tx, unknown.SKU)
	if kerr != nil {
		return nil, kerr
	}
	if ok {
		return d.lost(errLost), nil
	}
	return err, nil
}

func (d *Durable) after(op, id string) {
	if d.hook != nil {
		d.hook(op, id)
	}
}

// Commit commits in the journal and in Redis in one SQL transaction holding the generation
// (the units stay taken in Redis whichever way it ends, so a failure never frees them).
// Concurrent commits, releases and returns share that transaction (see resolveBatch).
func (d *Durable) Commit(ctx context.Context, id string, now time.Time) (inventory.State, error) {
	return d.resolves.Resolve(ctx, "", id, inventory.StateCommitted, now)
}

// Release releases in the journal, then in Redis after the commit (so Redis never frees
// units the journal still holds). A Redis step the generation guard refuses waits for the
// rebuild under way, at most WithRebuildWait's time; past it, unless a rebuild has read
// the release from the journal already, the call answers an error matching
// errcode.ErrUnavailable (DependencyRebuilding's Retry-After) and the next heal rebuilds
// Redis from the journal, the release in it. Return, Expire and a positive Adjust do the
// same; a Return whose refused step finds one of its SKUs set by a SetStock that committed
// after it (an absolute count with the returned units in it) asks for that rebuild at once
// instead of running the step again (see afterRebuild). (A SetStock waits while a
// Return's units are sold in Redis and no longer in the journal, and refuses if that lasts;
// only one by an earlier version, which does not check, can commit there.)
func (d *Durable) Release(ctx context.Context, id string, now time.Time) (inventory.State, error) {
	return d.resolves.Resolve(ctx, "", id, inventory.StateReleased, now)
}

// Return returns a committed reservation in the journal, then in Redis after the commit.
// The journal keeps the row for ever, so Return stays idempotent whatever Redis forgot.
func (d *Durable) Return(ctx context.Context, id string, now time.Time) (inventory.State, error) {
	return d.resolves.Resolve(ctx, "", id, inventory.StateReturned, now)
}

// resolveOps name the operation of each state a call resolves to.
var resolveOps = map[inventory.State]string{
	inventory.StateCommitted: "commit", inventory.StateReleased: "release", inventory.StateReturned: "return",
}

// resolution is one call of a resolve batch: the reservation as the journal holds it (r,
// in its state before) and the state it ends in.
type resolution struct {
	c   *groupcommit.Call
	op  string
	r   inventory.Reservation
	fin inventory.State
}

// settling is what settleManyLua needs to make Redis follow the journal: from the
// reservation's state before (assumed when Redis lost the record) to fin.
func (x resolution) settling() settling {
	return settling{r: x.r, a: settleArgs{to: x.fin, fallback: x.r.State}, now: x.c.R.ResolvedAt}
}

// resolveRun resolves a batch of calls (distinct IDs) in one transaction (resolveBatch),
// then makes Redis follow the journal for those the commit freed units of, in one script
// call. A failed transaction fails every call; nothing of it reached the journal, unless
// the connection failed at COMMIT, whose answer may be what was lost: the changes that
// free units may then be in the journal without Redis ever following them, which a
// retry may never come to do (and a replay cannot always do; see settleAfter), so the call
// asks for a rebuild from the journal (behind) and those changes fail with its error.
func (d *Durable) resolveRun(ctx context.Context, calls []*groupcommit.Call, ready func()) {
	var (
		gen        string
		after      []resolution
		committing bool // the last attempt's statements succeeded: only its COMMIT is left
	)
	err := sqlutil.InTx(ctx, d.db, func(ctx context.Context, tx bun.Tx) error {
		committing = false
		var err error
		if gen, after, err = d.resolveBatch(ctx, tx, calls); err != nil {
			return err
		}
		committing = true
		ready()
		return nil
	})
	if err != nil {
		for _, c := range calls {
			c.Out, c.Err = inventory.Reservation{}, d.fail(c.Ctx, resolveOps[c.R.State], err)
		}
		frees := func(x resolution) bool { return x.fin != x.r.State }
		if committing && depfail.Is(err) && slices.ContainsFunc(after, frees) {
			rebuild := d.behind(ctx, err)
			for _, x := range after {
				if frees(x) {
					x.c.Err = rebuild
				}
			}
		}
		return
	}
	ss := make([]settling, len(after))
	for i, x := range after {
		d.after(x.op, x.r.ID)
		ss[i] = x.settling()
	}
	for i, err := range d.settleAfter(ctx, ss, gen) {
		if c := after[i].c; err != nil {
			c.Out, c.Err = inventory.Reservation{}, d.fail(c.Ctx, after[i].op, err)
		}
	}
}

// resolveBatch moves the journal's rows of calls (each to R.State at R.ResolvedAt; to
// expired past the deadline; a return only from committed) in tx: it reads the generation
// (held to the commit) and every row, locked, in one statement each; commits them in Redis
// in one script call; and updates the rows that moved in one statement. Each call gets its
// own answer: the state it ends in, or its own error (not found; a Redis record that does
// not match, whose row is then left alone). A replay settles Redis again, which moves
// nothing unless an earlier call died between the two. It returns the generation and the
// resolutions Redis follows after the commit (those that free units, replays included);
// an error fails the whole transaction (errLost when the generation moved).
func (d *Durable) resolveBatch(ctx context.Context, tx bun.Tx, calls []*groupcommit.Call) (string, []resolution, error) {
	gen, err := d.hold(ctx, tx)
	if err != nil {
		return "", nil, err
	}
	ids := make([]string, len(calls))
	for i, c := range calls {
		c.Out, c.Err, ids[i] = inventory.Reservation{}, nil, c.R.ID
	}
	rows, err := d.scan(ctx, tx, `SELECT id, state, items, buyer_id, created_at, expires_at FROM inventory_journal_reservations
 WHERE id IN (?)`+d.forUpdate, bun.List(ids))
	if err != nil {
		return "", nil, err
	}
	byID := make(map[string]inventory.Reservation, len(rows))
	for _, r := range rows {
		byID[r.ID] = r
	}
	var commits, after []resolution
	for _, c := range calls {
		r, ok := byID[c.R.ID]
		if !ok {
			c.Err = inventory.NotFound(c.R.ID)
			continue
		}
		x := resolution{c: c, op: resolveOps[c.R.State], r: r, fin: r.State}
		switch to := c.R.State; {
		case to == inventory.StateReturned:
			if r.State == inventory.StateCommitted {
				x.fin = to
			}
		case r.State == inventory.StateReserved:
			x.fin = to
			if !c.R.ResolvedAt.Before(r.ExpiresAt) {
				x.fin = inventory.StateExpired
			}
		}
		c.Out.State = x.fin
		switch x.fin {
		case inventory.StateCommitted:
			commits = append(commits, x)
		case inventory.StateReserved:
		default:
			after = append(after, x)
		}
	}
	if len(commits) > 0 {
		ss := make([]settling, len(commits))
		for i, x := range commits {
			ss[i] = x.settling()
		}
		_, errs, err := d.b.settleMany(ctx, ss, d.guard(gen)...)
		if err != nil {
			return "", nil, redisErr(ctx, err)
		}
		if err := d.sameServer(ctx); err != nil {
			return "", nil, err
		}
		for i, x := range commits {
			switch {
			case errors.Is(errs[i], errLost):
				return "", nil, errs[i] // the generation moved or a stock key is gone: all fail closed
			case errs[i] != nil:
				x.c.Out, x.c.Err = inventory.Reservation{}, d.fail(x.c.Ctx, x.op, redisErr(x.c.Ctx, errs[i]))
			default:
				d.after(x.op, x.r.ID)
			}
		}
	}
	return gen, after, d.update(ctx, tx, append(commits, after...))
}

// update moves the journal rows of the resolutions that changed state and have no error of
// their own, in one statement.
func (d *Durable) update(ctx context.Context, tx bun.Tx, xs []resolution) error {
	var states, times strings.Builder
	var stateArgs, timeArgs []any
	var ids []string
	for _, x := range xs {
		if x.c.Err != nil || x.fin == x.r.State {
			continue
		}
		states.WriteString(" WHEN ? THEN ?")
		times.WriteString(" WHEN ? THEN ?")
		stateArgs = append(stateArgs, x.r.ID, string(x.fin))
		timeArgs = append(timeArgs, x.r.ID, x.c.R.ResolvedAt.UnixMilli())
		ids = append(ids, x.r.ID)
	}
	if len(ids) == 0 {
		return nil
	}
	args := append(append(stateArgs, timeArgs...), bun.List(ids))
	_, err := tx.ExecContext(ctx, `UPDATE inventory_journal_reservations SET state = CASE id`+states.String()+
		` END, resolved_at = CASE id`+times.String()+` END WHERE id IN (?)`, args...)
	return err
}

// settleAfter makes Redis follow journal changes already committed, in one script call,
// and returns each one's error. When the guard refuses it, it waits for a rebuild under
// way and runs again (see afterRebuild); lost data is no failure then (the rebuild reads
// the journal). A wait that runs out (WithRebuildWait) with no rebuild recorded that read
// the changes asks for a rebuild and is returned as its 503, like the failures below.
// Any other failure asks for a rebuild and is returned as the rebuild's 503: a replay
// cannot always settle what this call left undone (a Return of a reservation Redis holds
// no record of, committed before a rebuild or longer ago than the retention, assumes on
// its replay that Redis returned it already). For the same reason it runs whether or not
// the callers are still there: the journal has committed.
func (d *Durable) settleAfter(ctx context.Context, ss []settling, gen string) []error {
	if len(ss) == 0 {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	_, errs, err := d.b.settleMany(ctx, ss, d.guard(gen)...)
	if errors.Is(err, errMarker) { // the guard refused: maybe a rebuild writing Redis
		done, werr := d.afterRebuild(ctx, gen, returnedSKUs(ss), func(now string) { _, errs, err = d.b.settleMany(ctx, ss, d.guard(now)...) })
		switch {
		case werr != nil:
			errs, err = nil, werr // asks for a rebuild below (behind)
		case done:
			// A rebuild read the journal with these changes in it: Redis holds them.
			return make([]error, len(ss))
		}
	}
	if err != nil {
		errs = make([]error, len(ss))
		for i := range errs {
			errs[i] = err
		}
	}
	// behind asks for the rebuild once for the whole batch; later failures only wrap.
	asked := false
	behind := func(err error) error {
		if asked {
			return d.lost(err)
		}
		asked = true
		return d.behind(ctx, err)
	}
	for i, err := range errs {
		switch {
		case errors.Is(err, errMarker):
			// Refused again, with no rebuild recorded that read these changes: Redis moved
			// on without them (a SetStock), or lost its marker. Only a rebuild applies them.
			_ = behind(err)
			errs[i] = nil
		case errors.Is(err, errLost):
			_ = d.lost(err)
			errs[i] = nil
		case err != nil:
			errs[i] = behind(redisErr(ctx, err))
		}
	}
	return errs
}

// returnedSKUs are the SKUs whose on-hand count ss add to: the lines of its Returns.
func returnedSKUs(ss []settling) []string {
	var skus []string
	for _, s := range ss {
		if s.a.to == inventory.StateReturned {
			for _, l := range s.r.Lines {
				skus = append(skus, l.SKU)
			}
		}
	}
	return skus
}

// Get reads the reservation from the journal, which keeps it for ever.
func (d *Durable) Get(ctx context.Context, id string) (inventory.Reservation, error) {
	r, err := sqlrow.Reservation(ctx, d.db, "inventory_journal_reservations", id, "")
	return r, d.fail(ctx, "get", err)
}

// Expire expires up to limit due reservations of the journal in one transaction (rows
// another sweeper or a Commit holds are skipped, so each is expired, and counted, once),
// then in Redis. It also settles Redis reservations past their deadline that the journal
// does not hold live: halves of attempts whose transaction rolled back, and Redis steps
// an earlier process died before taking. Those are not counted: the journal never held them.
func (d *Durable) Expire(ctx context.Context, now time.Time, limit int) (int, error) {
	var (
		due []inventory.Reservation
		gen string
	)
	err := d.inTx(ctx, "expire", func(ctx context.Context, tx bun.Tx) error {
		due = due[:0]
		var err error
		if gen, err = d.hold(ctx, tx); err != nil {
			return err
		}
		if due, err = d.scan(ctx, tx, `SELECT id, state, items, buyer_id, created_at, expires_at FROM inventory_journal_reservations
 WHERE state = 'reserved' AND expires_at <= ? ORDER BY expires_at LIMIT ?`+d.skipLocked, now.UnixMilli(), limit); err != nil || len(due) == 0 {
			return err
		}
		ids := make([]string, len(due))
		for i, r := range due {
			ids[i] = r.ID
		}
		_, err = tx.ExecContext(ctx, `UPDATE inventory_journal_reservations SET state = 'expired', resolved_at = ? WHERE id IN (?)`,
			now.UnixMilli(), bun.List(ids))
		return err
	})
	if err != nil {
		return 0, err
	}
	ss := make([]settling, len(due))
	for i, r := range due {
		ss[i] = settling{r: r, a: settleArgs{to: inventory.StateExpired, fallback: inventory.StateReserved}, now: now}
	}
	if err := errors.Join(d.settleAfter(ctx, ss, gen)...); err != nil {
		return len(due), d.fail(ctx, "expire", err)
	}
	return len(due), d.sweepStrays(ctx, now, limit)
}

// sweepStrays settles the Redis reservations past their deadline that the journal does not
// hold live, to the journal's state (expired when the journal never recorded them). The
// journal rows (or, for absent ones, the gaps) stay locked meanwhile, so a Reserve adopting
// one of them waits and then finds it settled.
func (d *Durable) sweepStrays(ctx context.Context, now time.Time, limit int) error {
	ids, err := d.b.c.ZRangeByScore(ctx, d.b.due, &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: int64(limit),
	}).Result()
	if err != nil || len(ids) == 0 {
		return d.fail(ctx, "expire", redisErr(ctx, err))
	}
	// Rows the journal holds live are left unlocked: locking them would hide them from a
	// concurrent journal sweep (SKIP LOCKED), which could then report nothing due while
	// they still are. A live row found here is the journal sweep's to expire.
	var live []string
	if err := d.db.NewRaw(`SELECT id FROM inventory_journal_reservations WHERE id IN (?) AND state = 'reserved'`,
		bun.List(ids)).Scan(ctx, &live); err != nil {
		return d.fail(ctx, "expire", err)
	}
	ids = slices.DeleteFunc(ids, func(id string) bool { return slices.Contains(live, id) })
	if len(ids) == 0 {
		return nil
	}
	return d.inTx(ctx, "expire", func(ctx context.Context, tx bun.Tx) error {
		gen, err := d.hold(ctx, tx)
		if err != nil {
			return err
		}
		rows, err := d.scan(ctx, tx, `SELECT id, state, items, buyer_id, created_at, expires_at FROM inventory_journal_reservations
 WHERE id IN (?)`+d.forUpdate, bun.List(ids))
		if err != nil {
			return err
		}
		d.after("strays", "")
		journal := make(map[string]inventory.State, len(rows))
		for _, r := range rows {
			journal[r.ID] = r.State
		}
		for _, id := range ids {
			to, ok := journal[id]
			if to == inventory.StateReserved {
				continue // the journal's own sweep expires it
			}
			if !ok {
				to = inventory.StateExpired
			}
			v, err := d.b.c.HMGet(ctx, d.b.resKey(id), "lines", "buyer", "created", "expires").Result()
			if err != nil {
				return redisErr(ctx, err)
			}
			lines, err := inventory.DecodeLines(toString(v[0]))
			if v[0] == nil || err != nil {
				if err := d.b.c.ZRem(ctx, d.b.due, id).Err(); err != nil {
					return redisErr(ctx, err)
				}
				continue
			}
			r := inventory.Reservation{ID: id, Lines: lines, BuyerID: toString(v[1]),
				CreatedAt: fromMillis(toInt(v[2])), ExpiresAt: fromMillis(toInt(v[3]))}
			// Stale (the record changed) or missing (gone since it was read: settled by
			// another sweeper, past its retention): nothing of this read is left to settle.
			_, err = d.b.settle(ctx, r, settleArgs{to: to, expires: r.ExpiresAt}, now, d.guard(gen)...)
			if err != nil && !errors.Is(err, errStale) && !errors.Is(err, inventory.ErrReservationNotFound) {
				return redisErr(ctx, err)
			}
		}
		return nil
	})
}

// scan reads reservations (id, state, items, buyer_id, created_at, expires_at).
func (d *Durable) scan(ctx context.Context, db bun.IDB, query string, args ...any) ([]inventory.Reservation, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []inventory.Reservation
	for rows.Next() {
		var r inventory.Reservation
		var state, items string
		var created, expires int64
		if err := rows.Scan(&r.ID, &state, &items, &r.BuyerID, &created, &expires); err != nil {
			return nil, err
		}
		if r.Lines, err = inventory.DecodeLines(items); err != nil {
			return nil, err
		}
		r.State, r.CreatedAt, r.ExpiresAt = inventory.State(state), fromMillis(created), fromMillis(expires)
		out = append(out, r)
	}
	return out, rows.Err()
}

// soldWaitFirst and soldWaitLast bound SetStock's waits for Redis's sold count to come
// back to the journal's committed units: the first pause, doubled up to the last.
const (
	soldWaitFirst = time.Millisecond
	soldWaitLast  = 16 * time.Millisecond
)

// SetStock sets the on-hand count in the journal and in Redis under the generation's
// exclusive lock: it waits for the writers in flight and holds new ones back for the few
// milliseconds it takes, so the journal's sold and reserved counts it reads are exact.
//
// Redis's step runs inside the transaction and may free units, so a transaction that
// does not commit after it must leave Redis failing closed: the transaction moves the
// journal's generation to the next one, and the script, once it has set the stock, moves
// Redis's marker to that one too. Committed, the two agree again. Not committed (the
// journal's row or COMMIT failed, the script's answer was lost, the caller gave up), the
// marker is ahead of the journal and every writer, in every process, fails closed on Redis
// from the moment the script ran, with no further write needed, until Redis is rebuilt
// from the journal. The call then asks for that rebuild: an error matching
// errcode.ErrUnavailable, with DependencyRebuilding's Retry-After; the setting may or may
// not be recorded, and the caller's retry sets it (TestDurableSetStockCut,
// TestDurableRedisStepCut).
//
// A SKU the journal knows whose stock key, or usage key with its sentinel, Redis lacks is
// lost data: the script changes nothing, and the call fails closed and asks for a rebuild
// (creating the SKU afresh would put its reserved units on sale again and forget its
// buyers' usage). So is a sold count in Redis other than the units the journal holds
// committed (the generation lock keeps every commit and return out while the setting
// runs): a commit's Redis step ran in a transaction that then did not commit, or a
// return's Redis step has not run yet. The journal records the count as on hand beside its
// committed units and Redis beside its sold ones, so a setting then would leave the two
// apart by those units (TestDurableStrayCommitThenSetStock); the rebuild it asks for
// writes Redis from the journal, and the caller's retry sets the count. A return's Redis
// step runs a moment after its commit and needs no lock the setting holds, so the script
// is run again a few times first (soldWaitFirst doubling to soldWaitLast, about 30 ms
// holding the generation's lock): only a disagreement that outlasts them asks for the
// rebuild (TestDurableSetStockWaitsForAReturnsRedisStep).
func (d *Durable) SetStock(ctx context.Context, s inventory.StockSetting) (inventory.Stock, error) {
	var (
		out  inventory.Stock
		next int64 // the generation committed with the setting
		ran  bool  // a script may have run, in any attempt: Redis may hold the setting
	)
	err := d.inTx(ctx, "set stock", func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE inventory_journal_generation SET gen = gen + 1 WHERE name = 'gen'`); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT gen FROM inventory_journal_generation WHERE name = 'gen'`).Scan(&next); err != nil {
			return err
		}
		// Redis checks the on-hand count against what is reserved (the journal's live
		// reservations, and any stray halves of rolled-back attempts).
		committed, err := committedUnits(ctx, tx, s.SKU)
		if err != nil {
			return err
		}
		// Every other writer waits on the generation lock: no upsert race.
		known, err := d.known(ctx, tx, s.SKU)
		if err != nil {
			return err
		}
		for pause := soldWaitFirst; ; pause *= 2 {
			ran = true
			reply, err := d.run(ctx, d.b.g.setStock, strconv.FormatInt(next-1, 10), []string{d.b.stockKey(s.SKU), d.b.skus, d.b.usageKey(s.SKU)},
				s.SKU, s.OnHand, s.BuyerLimit, next, knownArg(known), committed)
			if err != nil {
				return err
			}
			res, _ := reply.([]any)
			if out, err = setStockReply(s, res); err == nil {
				break
			}
			ran = false // refused: Redis is unchanged
			if !errors.Is(err, errSoldApart) || pause > soldWaitLast {
				return err
			}
			if err := backoff.Sleep(ctx, pause); err != nil {
				return err
			}
		}
		query := `UPDATE inventory_journal_stock SET base = ?, buyer_limit = ? WHERE sku = ?`
		if !known {
			query = `INSERT INTO inventory_journal_stock (base, buyer_limit, sku) VALUES (?, ?, ?)`
		}
		_, err = tx.ExecContext(ctx, query, s.OnHand+committed, s.BuyerLimit, s.SKU)
		return err
	})
	switch {
	case err != nil && ran:
		return inventory.Stock{}, d.lost(err)
	case err != nil:
		return inventory.Stock{}, err
	}
	d.gen.Store(next) // after the commit: Stocks trusts a marker equal to it
	return out, nil
}

// Adjust records the adjustment in the journal (once per ID, for ever) and applies it in
// Redis: a negative delta inside the transaction (Redis checks the units are there), a
// positive one after the commit (the journal checked, under the SKU's row lock, that it
// leaves at most inventory.MaxOnHand on hand: base + delta − committed units; a refusal
// rolls the journal row back and never reaches Redis). A replay changes nothing in Redis,
// so a positive delta whose commit's answer was lost, or whose Redis step failed after the
// commit, asks for a rebuild from the journal (an error matching errcode.ErrUnavailable,
// with DependencyRebuilding's Retry-After) rather than leave Redis without it; so does a
// positive delta whose Redis step the guard refused and that waited for the rebuild lock
// longer than WithRebuildWait allows (see Release), or found the SKU set by a SetStock
// that committed after it (whose absolute count has the delta already). So does a negative
// delta whose Redis step ran, or may have, in a transaction that then did not commit or
// whose COMMIT's answer was lost: Redis may lack units the journal still holds, and waiting
// for the caller's retry (which the adjustment's ID makes apply once) would leave them
// unsold if none comes. So does a SKU the journal knows whose stock key Redis lacks (lost
// data, never ErrUnknownSKU), an ID whose key in Redis is of an earlier attempt that did
// not commit (never *inventory.ConflictError: the journal alone says which adjustment an
// ID is), and a replay while a rebuild asked for has not run yet (in any process): the
// stock Redis holds may lack the adjustment the replay would report.
func (d *Durable) Adjust(ctx context.Context, a inventory.Adjustment, now time.Time) (inventory.Stock, error) {
	var (
		gen    string
		replay bool
		ran    bool // a negative delta's script may have run, in any attempt
		out    inventory.Stock
	)
	apply := func(ctx context.Context) error {
		// No bound in Redis: the journal decided, and Redis follows it.
		reply, err := d.run(ctx, d.b.g.adjust, gen, []string{d.b.stockKey(a.SKU), d.b.adjKey(a.ID)}, d.b.adjustArgs(a, 0)...)
		if err != nil {
			return err
		}
		res, _ := reply.([]any)
		out, err = adjustReply(a, res)
		switch {
		case errors.Is(err, inventory.ErrUnknownSKU):
			// apply runs only once the journal found the SKU: Redis lost its stock key.
			return fmt.Errorf("%w: the stock key of %s is gone", errLost, a.SKU)
		case errors.Is(err, inventory.ErrIdempotencyConflict):
			// The journal decides which adjustment an ID is: Redis's key under it is of an
			// attempt whose Redis step ran and whose transaction did not commit, which asked
			// for the rebuild that deletes the key and gives back its units.
			return fmt.Errorf("%w: the key of adjustment %s is of an attempt the journal does not hold", errLost, a.ID)
		}
		return err
	}
	err := d.inTx(ctx, "adjust", func(ctx context.Context, tx bun.Tx) error {
		var err error
		if gen, err = d.hold(ctx, tx); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO inventory_journal_adjustments (id, sku, delta, reason, created_at) VALUES (?, ?, ?, ?, ?)`,
			a.ID, a.SKU, a.Delta, a.Reason, now.UnixMilli())
		if replay = sqlutil.IsDuplicateKey(err); replay {
			var prev inventory.Adjustment
			if err := tx.QueryRowContext(ctx, `SELECT sku, delta, reason FROM inventory_journal_adjustments WHERE id = ?`, a.ID).
				Scan(&prev.SKU, &prev.Delta, &prev.Reason); err != nil {
				return err
			}
			if prev.SKU != a.SKU || prev.Delta != a.Delta || prev.Reason != a.Reason {
				return inventory.NewConflictError("adjustment", a.ID)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if a.Delta > 0 {
			return d.addBase(ctx, tx, a)
		}
		n, err := rowsAffected(tx.ExecContext(ctx, `UPDATE inventory_journal_stock SET base = base + ? WHERE sku = ?`, a.Delta, a.SKU))
		if err != nil {
			return err
		}
		if n == 0 {
			return &inventory.UnknownSKUError{SKU: a.SKU}
		}
		ran = true
		if err := apply(ctx); err != nil {
			if isDomain(err) || errors.Is(err, errLost) {
				ran = false // refused: Redis is unchanged
			}
			return err
		}
		return nil
	})
	switch {
	case err != nil && (ran || a.Delta > 0 && depfail.Is(err)):
		// The connection failed, COMMIT's answer maybe with it: the positive delta may be
		// in the journal without ever reaching Redis, and its replay does not apply it.
		// Or the negative delta's script ran (or may have) and the journal may not hold
		// it: Redis is short of its units until a retry, which may never come. Redis is
		// rebuilt from the journal, which holds it or not.
		return inventory.Stock{}, d.behind(ctx, err)
	case err != nil:
		return inventory.Stock{}, err
	case replay:
		// The first call may have left Redis without the delta and asked for a rebuild
		// (here or in another process): the stock Redis holds would not have it yet.
		if err := d.notBehind(ctx); err != nil {
			return inventory.Stock{}, d.fail(ctx, "adjust", err)
		}
		st, err := d.Stocks(ctx, []string{a.SKU})
		if err != nil {
			return inventory.Stock{}, err
		}
		return st[a.SKU], nil
	case a.Delta >= 0:
		err = apply(ctx)
		if errors.Is(err, errMarker) { // maybe a rebuild writing Redis
			done, werr := d.afterRebuild(ctx, gen, []string{a.SKU}, func(now string) { gen = now; err = apply(ctx) })
			switch {
			case werr != nil:
				return inventory.Stock{}, d.behind(ctx, werr)
			case done:
				// A rebuild read the journal with this adjustment in it: Redis holds it.
				st, err := d.Stocks(ctx, []string{a.SKU})
				if err != nil {
					return inventory.Stock{}, err
				}
				return st[a.SKU], nil
			}
		}
		if err != nil && !isDomain(err) {
			// Committed, but whether the script ran is not known (Redis failed or timed
			// out), or Redis refused it with no rebuild recorded that read it (Redis moved
			// on without it, or lost data): as above.
			return inventory.Stock{}, d.behind(ctx, err)
		}
		err = d.fail(ctx, "adjust", err)
	}
	return out, err
}

// addBase adds a positive a.Delta to the journal's base of a.SKU unless the on-hand count
// (base − committed units) would pass inventory.MaxOnHand: one conditional UPDATE, which
// reads the latest base under the row's lock. A base within MaxOnHand needs no sum of the
// committed units; otherwise the UPDATE runs again with it (as this transaction reads it,
// unlocked: a Commit in between only makes the bound stricter, a Return looser by the
// units it returns, as a Return after the adjustment would), and when that matches no row
// either the SKU is unknown or the delta is refused.
func (d *Durable) addBase(ctx context.Context, tx bun.Tx, a inventory.Adjustment) error {
	const query = `UPDATE inventory_journal_stock SET base = base + ? WHERE sku = ? AND base + ? <= ?`
	n, err := rowsAffected(tx.ExecContext(ctx, query, a.Delta, a.SKU, a.Delta, int64(inventory.MaxOnHand)))
	if err != nil || n == 1 {
		return err
	}
	committed, err := committedUnits(ctx, tx, a.SKU)
	if err != nil {
		return err
	}
	if committed > 0 {
		n, err := rowsAffected(tx.ExecContext(ctx, query, a.Delta, a.SKU, a.Delta, inventory.MaxOnHand+committed))
		if err != nil || n == 1 {
			return err
		}
	}
	var base int64
	err = tx.QueryRowContext(ctx, `SELECT base FROM inventory_journal_stock WHERE sku = ?`+d.forUpdate, a.SKU).Scan(&base)
	switch {
	case sqlutil.IsNoRows(err):
		return &inventory.UnknownSKUError{SKU: a.SKU}
	case err != nil:
		return err
	}
	return inventory.OnHandPastMax(a.SKU, base-committed, a.Delta)
}

// knownArg is setStockGuardedLua's ARGV[5]: whether the journal knows the SKU.
func knownArg(known bool) string {
	if known {
		return "1"
	}
	return "0"
}

// committedUnits is the sum of the units of sku's committed (sold) reservations, as tx
// reads them.
func committedUnits(ctx context.Context, tx bun.Tx, sku string) (int64, error) {
	var committed int64
	err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(l.qty), 0) FROM inventory_journal_lines l
 JOIN inventory_journal_reservations r ON r.id = l.reservation_id WHERE l.sku = ? AND r.state = 'committed'`, sku).
		Scan(&committed)
	return committed, err
}

// rowsAffected is how many rows the statement that gave res changed.
func rowsAffected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Stocks reads the SKUs and the generation marker from Redis in one round trip, and answers
// them when the marker is the generation this process last read from the journal (before
// that round trip). Otherwise it reads the journal's generation, then Redis again, until the
// marker is the generation read before it (see settledStocks): a marker ahead of it is a
// SetStock about to commit, waited for. A marker other than the journal's generation then,
// or a SKU Redis lacks that the journal knows, is lost data: the call fails closed and asks
// for a rebuild.
func (d *Durable) Stocks(ctx context.Context, skus []string) (map[string]inventory.Stock, error) {
	cached := d.gen.Load()
	marker, cmds, err := d.readStocks(ctx, skus)
	if err == nil && (marker != cached || marker == 0) {
		cmds, err = d.settledStocks(ctx, skus)
	}
	if err != nil {
		return nil, d.fail(ctx, "stocks", err)
	}
	m := make(map[string]inventory.Stock, len(skus))
	var missing []string
	for i, cmd := range cmds {
		if v := cmd.Val(); v[0] != nil {
			m[skus[i]] = stockFrom(skus[i], v)
		} else {
			missing = append(missing, skus[i])
		}
	}
	if len(missing) > 0 {
		ok, err := d.known(ctx, d.db, missing...)
		if err != nil {
			return nil, d.fail(ctx, "stocks", err)
		}
		if ok {
			return nil, d.lost(errLost)
		}
	}
	return m, nil
}

// readStocks reads Redis's generation marker (0 when it has none) and the SKUs' stock
// fields in one round trip.
func (d *Durable) readStocks(ctx context.Context, skus []string) (int64, []*redis.SliceCmd, error) {
	var marker *redis.StringCmd
	cmds := make([]*redis.SliceCmd, len(skus))
	_, err := d.b.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		marker = p.Get(ctx, d.marker)
		for i, sku := range skus {
			cmds[i] = p.HMGet(ctx, d.b.stockKey(sku), stockFields...)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, nil, redisErr(ctx, err)
	}
	got, _ := marker.Int64()
	return got, cmds, nil
}

// settledWait bounds how long settledStocks waits for a SetStock in flight to commit.
const settledWait = time.Second

// settledStocks reads the journal's generation, then the SKUs and the marker from Redis,
// and returns the SKUs when the marker is that generation: Redis then holds it, since a
// SetStock moves the marker past the generation before its commit and a rebuild drops the
// marker before its bump. (Redis read before the generation could hold a setting that
// never committed, under a marker a rebuild's bump has since made the generation.) A
// marker one ahead is a SetStock in flight: both are read again after a pause, without
// holding any lock, for at most settledWait. Any other marker, or one still ahead then, is
// errMarker.
func (d *Durable) settledStocks(ctx context.Context, skus []string) ([]*redis.SliceCmd, error) {
	deadline := time.Now().Add(settledWait)
	for pause := 2 * time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		gen, err := d.currentGen(ctx)
		if err != nil {
			return nil, err
		}
		marker, cmds, err := d.readStocks(ctx, skus)
		switch {
		case err != nil:
			return nil, err
		case marker == gen: // 0 for both: a journal never built or set, Redis holds nothing
			return cmds, nil
		case marker != gen+1 || time.Now().Add(pause).After(deadline):
			return nil, errMarker
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// currentGen reads the journal's generation without a lock.
func (d *Durable) currentGen(ctx context.Context) (int64, error) {
	var gen int64
	err := d.db.QueryRowContext(ctx, `SELECT gen FROM inventory_journal_generation WHERE name = 'gen'`).Scan(&gen)
	if err == nil {
		d.gen.Store(gen)
	}
	return gen, err
}
