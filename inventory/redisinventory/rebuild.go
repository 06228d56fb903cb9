package redisinventory

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/inventory"
)

// Column types of the journal: IDs and SKUs are printable ASCII compared byte for byte.
const (
	journalKey   = "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL"
	journalItems = "VARCHAR(3500) CHARACTER SET ascii COLLATE ascii_bin NOT NULL"
	journalText  = "VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL"
)

// CreateJournal creates a Durable's tables if they do not exist: inventory_journal_generation
// (rows gen: the generation Redis must hold; rebuild: the rebuild lock; built: the
// generation the last rebuild built; behind: a generation no rebuild has passed yet when
// Redis missed a change of the journal), inventory_journal_stock (per SKU: base = on hand + sold,
// and the buyer limit; changed only by SetStock and Adjust), inventory_journal_reservations
// (one row per reservation, kept for ever), inventory_journal_lines (their lines, by SKU)
// and inventory_journal_adjustments. It is idempotent.
func CreateJournal(ctx context.Context, db bun.IDB) error {
	key, items, text, suffix := journalKey, journalItems, journalText, " ENGINE=InnoDB"
	dueIndex := ",\n INDEX inventory_journal_due (state, expires_at)"
	if sqlutil.IsSQLite(db) {
		key, items, text, suffix, dueIndex = "TEXT NOT NULL", "TEXT NOT NULL", "TEXT NOT NULL", "", ""
	}
	stmts := []string{
		`CREATE TABLE IF NOT EXISTS inventory_journal_generation (name ` + key + `, gen BIGINT NOT NULL, PRIMARY KEY (name))` + suffix,
		`CREATE TABLE IF NOT EXISTS inventory_journal_stock (sku ` + key + `, base BIGINT NOT NULL,
 buyer_limit BIGINT NOT NULL, PRIMARY KEY (sku))` + suffix,
		`CREATE TABLE IF NOT EXISTS inventory_journal_reservations (id ` + key + `, state ` + key + `, items ` + items + `,
 buyer_id ` + key + `, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, resolved_at BIGINT NOT NULL DEFAULT 0,
 PRIMARY KEY (id)` + dueIndex + `)` + suffix,
		`CREATE TABLE IF NOT EXISTS inventory_journal_lines (sku ` + key + `, reservation_id ` + key + `, qty BIGINT NOT NULL,
 PRIMARY KEY (sku, reservation_id))` + suffix,
		`CREATE TABLE IF NOT EXISTS inventory_journal_adjustments (id ` + key + `, sku ` + key + `, delta BIGINT NOT NULL,
 reason ` + text + `, created_at BIGINT NOT NULL, PRIMARY KEY (id))` + suffix,
	}
	if sqlutil.IsSQLite(db) {
		stmts = append(stmts, `CREATE INDEX IF NOT EXISTS inventory_journal_due ON inventory_journal_reservations (state, expires_at)`)
	}
	for _, name := range []string{"gen", "rebuild", "built", "behind"} {
		stmts = append(stmts, `INSERT INTO inventory_journal_generation (name, gen) SELECT '`+name+`', 0
 WHERE NOT EXISTS (SELECT 1 FROM inventory_journal_generation WHERE name = '`+name+`')`)
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("redisinventory: creating the journal: %w", err)
		}
	}
	return nil
}

// RebuildReport says what a rebuild wrote.
type RebuildReport struct {
	// Generation is the generation Redis holds now.
	Generation int64
	// SKUs and Reservations (live ones) are what it wrote to Redis.
	SKUs, Reservations int
	// Took is how long it took, from the generation bump to the marker.
	Took time.Duration
}

// rebuildBatch is how many commands one pipeline of a rebuild carries.
const rebuildBatch = 2000

// Rebuild writes Redis anew from the journal, whatever Redis holds:
//
//  1. it takes the rebuild lock (one rebuild at a time, across processes);
//  2. it bumps the generation under an exclusive row lock, which waits for every writer
//     still holding the old one (their Redis step is done, their journal row not yet
//     committed) and makes every later writer fail closed until step 5;
//  3. it reads the journal: each SKU's base and limit, and the reservations that hold
//     units (reserved and committed);
//  4. it claims the fence (the key rebuilder) with its generation, deletes every other key
//     of the inventory and writes, in batches, each SKU's counts (on hand = base −
//     committed, available = on hand − reserved, sold = committed), the buyers' usage,
//     and the live reservations with their deadlines; each batch is a MULTI/EXEC
//     transaction that runs only while the fence holds its generation, so a rebuild whose
//     lock died with its database connection, and which another heal took over, never
//     mixes its older read into the later rebuild's (TestDurableRebuildWhoseLockDied);
//  5. it sets the generation marker, with the run ID of the server it wrote on (the key
//     run, which a heal checks: see Heal), and the inventory answers again.
//
// The bump's transaction also records the generation in the row 'built', so that a change
// whose Redis step the guard refused knows whether a rebuild read it (see afterRebuild).
func (d *Durable) Rebuild(ctx context.Context) (RebuildReport, error) {
	return d.heal(ctx, true)
}

// Heal rebuilds Redis when it does not hold the journal's generation (it lost its data, or
// was never built), its data was written on another run of the server than the one
// answering now (a restart or a failover, maybe with an older copy of the data: seen by
// this process, or, for a process that has seen no server yet, by the run ID the last
// rebuild recorded in Redis), or an operation found a SKU key missing, and reports whether
// it did.
// Run it at start, before serving; Run calls it whenever an operation finds lost data.
// Like a Rebuild, it fails with an error matching errcode.ErrUnavailable when the journal
// or Redis cannot be reached.
func (d *Durable) Heal(ctx context.Context) (bool, error) {
	rep, err := d.heal(ctx, false)
	return rep.Generation != 0, err
}

func (d *Durable) heal(ctx context.Context, force bool) (RebuildReport, error) {
	d.healing.Lock()
	defer d.healing.Unlock()
	if d.forUpdate != "" { // one rebuild at a time, across processes (SQLite: one process)
		lock, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			return RebuildReport{}, fmt.Errorf("redisinventory: rebuild: %w", sqlutil.Unavailable(d.db, err))
		}
		defer lock.Rollback() //nolint:errcheck // releases the lock; nothing was written
		var n int64
		if err := lock.QueryRowContext(ctx, `SELECT gen FROM inventory_journal_generation WHERE name = 'rebuild'`+d.forUpdate).Scan(&n); err != nil {
			return RebuildReport{}, fmt.Errorf("redisinventory: rebuild lock: %w", sqlutil.Unavailable(d.db, err))
		}
	}
	// A Redis that restarted, or another one after a failover, may hold an older copy of
	// the data under a good marker (a restored snapshot, a lagging replica): its run ID
	// changed, so it is rebuilt too.
	srv, err := d.server.Read(ctx)
	if err != nil {
		return RebuildReport{}, redisErr(ctx, err)
	}
	healed := d.healed.Load()
	restarted := healed != nil && *healed != srv.RunID
	if !force {
		gen, behind, err := d.healState(ctx)
		if err != nil {
			return RebuildReport{}, fmt.Errorf("redisinventory: heal: %w", sqlutil.Unavailable(d.db, err))
		}
		if gen == 0 { // never built
			if err := d.refuseUnjournaled(ctx); err != nil {
				return RebuildReport{}, err
			}
		} else if !restarted && !behind && !d.forced.Load() {
			// The data must also have been written on this server run: a Redis back with
			// an older copy under a good marker holds the run ID of the server that wrote
			// it (or none), and this process may have seen no server before (it started
			// after the restart, healed is nil).
			marker, run, err := d.builtOn(ctx)
			if err != nil {
				return RebuildReport{}, err
			}
			if marker > gen {
				// A SetStock moves the marker before its transaction commits the
				// generation: one in flight, or committed since gen was read, shows it ahead.
				if gen, marker, run, err = d.settledState(ctx); err != nil {
					return RebuildReport{}, err
				}
			}
			if marker == gen && run == srv.RunID {
				d.healed.Store(&srv.RunID)
				return RebuildReport{}, nil
			}
		}
	}
	d.rebuilding.Store(true)
	defer d.rebuilding.Store(false)
	// The request is cleared before the rebuild reads the journal, so that one made while
	// it runs (for a change it may not read) asks again; a failed rebuild asks again too.
	forced := d.forced.Swap(false)
	rep, err := d.rebuild(ctx, srv.RunID)
	if err != nil {
		if forced {
			d.forced.Store(true)
		}
		d.log.ErrorContext(ctx, "redisinventory: rebuild failed", "err", err)
		return rep, err
	}
	d.healed.Store(&srv.RunID)
	d.log.WarnContext(ctx, "redisinventory: Redis rebuilt from the journal", "generation", rep.Generation,
		"skus", rep.SKUs, "reservations", rep.Reservations, "took", rep.Took)
	return rep, nil
}

// healState reads the journal's generation and whether Redis is behind it: a change whose
// Redis step failed recorded a generation (markBehind) that no rebuild has bumped past
// since. The process that recorded it may have died before its own heal.
func (d *Durable) healState(ctx context.Context) (gen int64, behind bool, err error) {
	rows, err := d.db.QueryContext(ctx, `SELECT name, gen FROM inventory_journal_generation WHERE name IN ('gen', 'built', 'behind')`)
	if err != nil {
		return 0, false, err
	}
	defer rows.Close()
	row := map[string]int64{}
	for rows.Next() {
		var name string
		var g int64
		if err := rows.Scan(&name, &g); err != nil {
			return 0, false, err
		}
		row[name] = g
	}
	if err := rows.Err(); err != nil {
		return 0, false, err
	}
	if _, ok := row["gen"]; !ok {
		return 0, false, errors.New("the journal has no generation (CreateJournal)")
	}
	d.gen.Store(row["gen"])
	return row["gen"], row["behind"] > 0 && row["built"] <= row["behind"], nil
}

// settledState reads the journal's generation under its shared lock, and Redis's marker and
// run ID while it holds it. No SetStock is in flight then (its transaction takes the lock
// exclusively before its script moves the marker), so a marker other than the generation
// is Redis lost, or ahead of the journal after a setting that did not commit, and not a
// setting about to commit. (SQLite: no such lock; a read sees the last commit.)
func (d *Durable) settledState(ctx context.Context) (gen, marker int64, run string, err error) {
	var rerr error
	err = d.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT gen FROM inventory_journal_generation WHERE name = 'gen'`+d.shareLock).Scan(&gen); err != nil {
			return err
		}
		marker, run, rerr = d.builtOn(ctx)
		return nil
	})
	switch {
	case err != nil:
		return 0, 0, "", fmt.Errorf("redisinventory: heal: %w", sqlutil.Unavailable(d.db, err))
	case rerr != nil:
		return 0, 0, "", rerr
	}
	d.gen.Store(gen)
	return gen, marker, run, nil
}

// ErrUnjournaledData is the error of a Heal that would build Redis for the first time from
// the journal while Redis already holds stock under the inventory's prefix: a plain
// Backend's data, or a Durable's whose journal was lost. Building would wipe that stock,
// so Heal fails closed instead. Either give the Durable a prefix of its own (WithTag) and
// set its stock, or wipe the old data on purpose with Rebuild and set the stock again.
var ErrUnjournaledData = errcode.New(errcode.FailedPrecondition, "unjournaled_stock",
	"redisinventory: Redis holds stock the journal never recorded; a first build would wipe it (see ErrUnjournaledData)")

// refuseUnjournaled returns ErrUnjournaledData, for a journal never built, when Redis holds
// SKUs under the prefix.
func (d *Durable) refuseUnjournaled(ctx context.Context) error {
	n, err := d.b.c.Exists(ctx, d.b.skus).Result()
	switch {
	case err != nil:
		return redisErr(ctx, err)
	case n > 0:
		return fmt.Errorf("%w: %s holds SKUs", ErrUnjournaledData, d.b.skus)
	}
	return nil
}

type usage struct{ sku, buyer string }

// rebuild writes Redis anew from the journal (see Rebuild) on the server of run ID runID.
func (d *Durable) rebuild(ctx context.Context, runID string) (RebuildReport, error) {
	start := time.Now()
	var rep RebuildReport
	// Redis fails closed before the generation moves: a marker that a SetStock which did
	// not commit left one ahead of the journal holds the very generation the bump below
	// commits, and must not pass for it while (or, should this rebuild fail, after) Redis
	// is rewritten.
	if err := d.dropMarker(ctx); err != nil {
		return rep, err
	}
	// The journal is read in the bump's transaction, under the generation's exclusive
	// lock: it holds exactly the writes of the old generation (the bump waited for every
	// writer holding it), and none of the new one, whose writers wait for the commit. A
	// write of the new generation that frees units (a release, expiry, return, positive
	// adjustment: Redis follows it after its commit) finds the marker gone while this
	// rebuild writes Redis, waits for it to end and runs its Redis step again (see
	// afterRebuild); one of the old generation is in what this rebuild read.
	type stock struct{ base, limit, committed, reserved int64 }
	var (
		stocks  map[string]*stock
		holding []inventory.Reservation
	)
	err := sqlutil.InTx(ctx, d.db, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE inventory_journal_generation SET gen = gen + 1 WHERE name = 'gen'`); err != nil {
			return fmt.Errorf("bump the generation: %w", err)
		}
		if err := tx.QueryRowContext(ctx, `SELECT gen FROM inventory_journal_generation WHERE name = 'gen'`).Scan(&rep.Generation); err != nil {
			return fmt.Errorf("bump the generation: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE inventory_journal_generation SET gen = ? WHERE name = 'built'`, rep.Generation); err != nil {
			return fmt.Errorf("record the generation: %w", err)
		}
		stocks = map[string]*stock{}
		rows, err := tx.QueryContext(ctx, `SELECT sku, base, buyer_limit FROM inventory_journal_stock`)
		if err != nil {
			return fmt.Errorf("read stock: %w", err)
		}
		for rows.Next() {
			var sku string
			st := &stock{}
			if err := rows.Scan(&sku, &st.base, &st.limit); err != nil {
				rows.Close()
				return fmt.Errorf("read stock: %w", err)
			}
			stocks[sku] = st
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return fmt.Errorf("read stock: %w", err)
		}
		holding, err = d.scan(ctx, tx, `SELECT id, state, items, buyer_id, created_at, expires_at
 FROM inventory_journal_reservations WHERE state IN ('reserved', 'committed')`)
		if err != nil {
			return fmt.Errorf("read reservations: %w", err)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("redisinventory: rebuild: %w", err)
	}
	d.gen.Store(rep.Generation)
	// From here on the rebuild lock may be lost with its database connection while Redis
	// is written: another process's heal may then take it and rebuild too. The fence keeps
	// the two apart in Redis (see fenced).
	if err := d.claimFence(ctx, rep.Generation); err != nil {
		return rep, err
	}

	used := map[usage]int64{}
	var live []inventory.Reservation
	for _, r := range holding {
		for _, l := range r.Lines {
			st := stocks[l.SKU]
			if st == nil {
				return rep, fmt.Errorf("redisinventory: rebuild: reservation %q holds SKU %q the journal has no stock for", r.ID, l.SKU)
			}
			if r.State == inventory.StateCommitted {
				st.committed += l.Qty
			} else {
				st.reserved += l.Qty
			}
			if r.BuyerID != "" {
				used[usage{l.SKU, r.BuyerID}] += l.Qty
			}
		}
		if r.State == inventory.StateReserved {
			live = append(live, r)
		}
	}

	if err := d.wipe(ctx, rep.Generation); err != nil {
		return rep, err
	}
	p := &batcher{ctx: ctx, d: d, gen: rep.Generation}
	for sku, st := range stocks {
		onHand := st.base - st.committed
		p.add("hset", d.b.stockKey(sku), "onhand", onHand, "available", onHand-st.reserved,
			"sold", st.committed, "limit", st.limit, "synced", st.committed)
		p.add("sadd", d.b.skus, sku)
		p.add("hset", d.b.usageKey(sku), usageSentinel, 1)
	}
	for u, qty := range used {
		p.add("hset", d.b.usageKey(u.sku), u.buyer, qty)
	}
	for _, r := range live {
		p.add("hset", d.b.resKey(r.ID), "state", string(inventory.StateReserved), "lines", inventory.EncodeLines(r.Lines),
			"buyer", r.BuyerID, "created", r.CreatedAt.UnixMilli(), "expires", r.ExpiresAt.UnixMilli())
		p.add("zadd", d.b.due, r.ExpiresAt.UnixMilli(), r.ID)
	}
	p.add("set", d.runKey, runID)
	p.add("set", d.marker, rep.Generation)
	if err := p.flush(); err != nil {
		return rep, fmt.Errorf("redisinventory: rebuild: write Redis: %w", err)
	}
	rep.SKUs, rep.Reservations, rep.Took = len(stocks), len(live), time.Since(start)
	return rep, nil
}

// batcher sends the commands added to it, rebuildBatch at a time, each batch in a fenced
// transaction of the rebuild of generation gen (see fenced).
type batcher struct {
	ctx  context.Context
	d    *Durable
	gen  int64
	cmds [][]any
	err  error
}

func (b *batcher) add(args ...any) {
	if b.cmds = append(b.cmds, args); len(b.cmds) >= rebuildBatch {
		_ = b.flush()
	}
}

func (b *batcher) flush() error {
	if b.err == nil && len(b.cmds) > 0 {
		b.err = b.d.fenced(b.ctx, b.gen, b.cmds)
	}
	b.cmds = b.cmds[:0]
	return b.err
}

// errSuperseded is the error of a rebuild whose fence another rebuild claimed, or Redis
// lost, while it wrote Redis.
var errSuperseded = errors.New("redisinventory: rebuild: another rebuild took Redis over (or Redis lost the rebuild's fence)")

// claimFence makes the rebuild of generation gen the one whose writes Redis takes: from
// now on every write of another rebuild, still running in this or another process (its
// rebuild lock lost with its database connection, and another heal took it), is refused
// (fenced), until another claims the fence in turn. The last claim wins, whatever the
// generations: a rebuild that claims after a later one wipes Redis and writes its older
// read under its own, older marker, which the journal's generation no longer matches, so
// Redis fails closed until the next heal; and a journal created again (lost) starts its
// generations anew below what the fence may hold.
func (d *Durable) claimFence(ctx context.Context, gen int64) error {
	if err := d.b.c.Set(ctx, d.fence, gen, 0).Err(); err != nil {
		return fmt.Errorf("redisinventory: rebuild: %w", redisErr(ctx, err))
	}
	return nil
}

// superseded is errSuperseded as an error of the rebuilding dependency.
func (d *Durable) superseded() error {
	return &errcode.UnavailableError{Dependency: DependencyRebuilding, RetryAfter: RebuildRetryAfter, Err: errSuperseded}
}

// fenced runs cmds (a rebuild's wipe or writes) in one MULTI/EXEC transaction if the fence
// holds gen, the rebuild's generation, with the fence WATCHed: another rebuild that claims
// it before EXEC aborts the transaction. A rebuild claims the fence before it wipes Redis,
// so whatever another wrote before the claim is wiped, and nothing the other would write
// after the claim reaches Redis: two rebuilds' reads of the journal never mix under one
// marker.
func (d *Durable) fenced(ctx context.Context, gen int64, cmds [][]any) error {
	err := d.b.c.Watch(ctx, func(tx *redis.Tx) error {
		got, err := tx.Get(ctx, d.fence).Int64()
		switch {
		case errors.Is(err, redis.Nil) || err == nil && got != gen:
			return errSuperseded
		case err != nil:
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range cmds {
				p.Do(ctx, c...)
			}
			return nil
		})
		return err
	}, d.fence)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errSuperseded), errors.Is(err, redis.TxFailedErr):
		return d.superseded()
	}
	return redisErr(ctx, err)
}

// builtOn reads, in one round trip, what the last rebuild left in Redis: the generation
// it built for (0: none, or a marker of another type) and the run ID of the server it
// wrote on ("": none, or a value of another type).
func (d *Durable) builtOn(ctx context.Context) (gen int64, run string, err error) {
	vals, err := d.b.c.MGet(ctx, d.marker, d.runKey).Result() // MGET answers nil for a key of another type
	if err != nil {
		return 0, "", redisErr(ctx, err)
	}
	if m, ok := vals[0].(string); ok {
		if gen, err = strconv.ParseInt(m, 10, 64); err != nil {
			return 0, "", redisErr(ctx, err)
		}
	}
	run, _ = vals[1].(string)
	return gen, run, nil
}

// node is the server holding the inventory's keys: the client itself, or in a cluster the
// master of the tag's slot.
func (d *Durable) node(ctx context.Context) (redis.Cmdable, error) {
	if cc, ok := d.b.c.(*redis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, d.marker)
		return node, redisErr(ctx, err)
	}
	return d.b.c, nil
}

// sameServer fails closed (lost, waking the healer) when the Redis that has just answered
// a write is not the server the last heal built or confirmed: one that restarted, or
// another after a failover, may hold an older copy of the data under a good marker (a
// restored snapshot, a lagging replica) and would sell units the journal already gave
// away until the healer's next look. redisserver.Watch reads the run ID again only after
// the pool opened a connection. Call it after the write, inside the writer's transaction,
// so that its failure rolls the journal's half back.
//
// A process that has not healed yet (its heal at start failed, the database being down,
// say, and the healer has not looked again) has seen no server: the data must then have
// been written on the server run answering now, as the last rebuild recorded it (the key
// run; see Heal).
func (d *Durable) sameServer(ctx context.Context) error {
	srv, err := d.server.Current(ctx)
	if err != nil {
		return redisErr(ctx, err)
	}
	healed := d.healed.Load()
	if healed == nil {
		_, run, err := d.builtOn(ctx)
		if err != nil {
			return err
		}
		if run != srv.RunID {
			return d.lost(fmt.Errorf("%w: Redis's data was written on another server run (%q, now %s) and no heal has looked yet",
				errLost, run, srv.RunID))
		}
		return nil
	}
	if srv.RunID != *healed {
		return d.lost(fmt.Errorf("%w: the Redis server restarted or changed (run %s, healed on %s)", errLost, srv.RunID, *healed))
	}
	return nil
}

// dropMarker deletes the generation marker: every guarded script fails closed until a
// rebuild writes it again.
func (d *Durable) dropMarker(ctx context.Context) error {
	c, err := d.node(ctx)
	if err != nil {
		return err
	}
	if err := c.Del(ctx, d.marker).Err(); err != nil {
		return fmt.Errorf("redisinventory: rebuild: %w", redisErr(ctx, err))
	}
	return nil
}

// wipe deletes every key of the inventory (its hash tag) but the fence, in transactions
// fenced for the rebuild of generation gen (see fenced); the rebuild has dropped the
// generation marker already.
func (d *Durable) wipe(ctx context.Context, gen int64) error {
	c, err := d.node(ctx)
	if err != nil {
		return err
	}
	iter := c.Scan(ctx, 0, escapeGlob(d.b.prefix)+"*", 1000).Iterator()
	unlink := []any{"unlink"}
	flush := func() error {
		if len(unlink) > 1 {
			if err := d.fenced(ctx, gen, [][]any{unlink}); err != nil {
				return fmt.Errorf("redisinventory: rebuild: wipe: %w", err)
			}
		}
		unlink = unlink[:1]
		return nil
	}
	for iter.Next(ctx) {
		if iter.Val() == d.fence {
			continue
		}
		if unlink = append(unlink, iter.Val()); len(unlink) > 1000 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("redisinventory: rebuild: scan: %w", redisErr(ctx, err))
	}
	return flush()
}

// escapeGlob escapes the glob characters of a key prefix for SCAN MATCH.
func escapeGlob(s string) string {
	out := make([]byte, 0, len(s)+4)
	for i := range len(s) {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// Run heals Redis whenever an operation finds it lost data, and checks the generation
// marker every interval besides (a Redis restarted empty is noticed even while idle),
// until ctx ends; then it returns nil. Failed heals are logged and tried again.
func (d *Durable) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-d.wake:
		}
		if _, err := d.Heal(ctx); err != nil && ctx.Err() == nil {
			d.log.ErrorContext(ctx, "redisinventory: heal failed", "err", err)
		}
	}
}

// Generation returns the generation of the journal and the one Redis' marker holds (0 when
// absent): equal when Redis is in service. For health checks and tests. A failure of
// either dependency matches errcode.ErrUnavailable.
func (d *Durable) Generation(ctx context.Context) (journal, redisGen int64, err error) {
	if journal, err = d.currentGen(ctx); err != nil {
		return 0, 0, sqlutil.Unavailable(d.db, err)
	}
	redisGen, err = d.b.c.Get(ctx, d.marker).Int64()
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	return journal, redisGen, redisErr(ctx, err)
}
