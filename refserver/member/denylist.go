package member

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/redisserver"
	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Denylist holds the IDs (jti) of access tokens revoked before they expire. An entry is
// needed only until its token expires; after that the token fails its expiry check anyway.
type Denylist interface {
	// Deny adds jti until the time its token expires.
	Deny(ctx context.Context, jti string, until time.Time) error
	// Denied reports whether jti is on the list. An error means the list could not answer.
	Denied(ctx context.Context, jti string) (bool, error)
}

// RedisDenylist answers the per-request check from Redis and writes every entry through to
// a SQLDenylist, the system of record. A Redis that lost its data (restarted empty,
// flushed, the marker evicted) must not answer "not denied" for a token that was: Redis
// holds a marker key next to the entries, and when the marker is missing the next check
// rebuilds Redis from SQL before it answers (a check that finds another rebuild under way,
// on any server, fails with an error matching errcode.ErrUnavailable). The marker names the
// Redis server (its run ID) it was built on, and a check that went through a newly
// opened connection reads the run ID again: a Redis that restarted from a snapshot older
// than its last writes, or another server after a failover, holds a marker of another
// run and is rebuilt too. The marker cannot tell a Redis that evicted entries but kept it
// (any maxmemory-policy but noeviction: the entries have a TTL, the marker is read on
// every check): run its Redis with noeviction, or without maxmemory. A check that reads
// the run ID finds an evicting configuration too, and fails closed (503) until it is
// fixed. A denial that reached SQL but neither its entry nor the marker's removal reached
// Redis (unreachable, paused, partitioned away from this server alone) makes this
// denylist's next check rebuild Redis before it answers, and bumps the denylist's
// generation in SQL (member_denylist_generation). The marker carries the generation its
// rebuild read before the entries ("ok <run ID> <generation>", without it for 0, as the
// earlier version wrote it), and every check compares it with the SQL generation as read
// at most WithGenerationCheck ago (1 s by default; one read at a time, no SQL statement
// per check in between): a lower one is rebuilt first. So every other denylist on the
// same Redis denies the token within that interval, and a check that cannot read the
// generation fails closed (503). What remains: the interval itself, and a denial whose
// bump failed too (SQL unreachable from that server as well, right after its revoking
// transaction committed): that Deny returns the error, and until it is retried or Redis
// is rebuilt for another reason, another server may still let the token through; so
// may it when the server stopped (crashed, killed) between that commit and its write to
// Redis, which bumps nothing, until the revocation is retried. The
// generation only grows: a database restored from a backup needs the marker deleted
// too. It is the denylist of full mode; run the SQLDenylist's purger too.
type RedisDenylist struct {
	rdb      redis.UniversalClient
	records  *SQLDenylist
	prefix   string
	marker   string
	building sync.Mutex
	// server is the Redis server holding the marker (see built).
	server *redisserver.Watch
	// missed counts the denials that are in SQL, maybe not in Redis, with the marker maybe
	// still there; synced is missed as it was when the last complete rebuild began. While
	// they differ, every check rebuilds Redis first (or fails while another rebuilds it).
	missed, synced atomic.Uint64
	// genCheck is how old gen may be when a check compares the marker with it, by the
	// clock now; genRead is the read of the SQL generation under way (under genMu).
	genCheck time.Duration
	now      func() time.Time
	gen      atomic.Pointer[generation]
	genMu    sync.Mutex
	genRead  *generationRead
}

// DefaultGenerationCheck is how long a RedisDenylist answers from the denylist generation
// it last read from SQL, unless WithGenerationCheck says otherwise.
const DefaultGenerationCheck = time.Second

// RedisDenylistOption configures a RedisDenylist.
type RedisDenylistOption func(*RedisDenylist)

// WithGenerationCheck sets how long a RedisDenylist answers from the denylist generation
// it last read from SQL before it reads it again (DefaultGenerationCheck): the longest
// a denial that another server's Redis client missed goes unseen by this denylist. 0
// reads it at every check (a SQL statement per check); a negative d counts as 0.
func WithGenerationCheck(d time.Duration) RedisDenylistOption {
	return func(rd *RedisDenylist) { rd.genCheck = max(d, 0) }
}

// NewRedisDenylist returns a denylist in rdb, under keys "commercekit:denied:<jti>" and the
// marker "commercekit:denied", written through to records (whose generation of that name
// it reads and bumps).
func NewRedisDenylist(rdb redis.UniversalClient, records *SQLDenylist, opts ...RedisDenylistOption) *RedisDenylist {
	const marker = "commercekit:denied"
	d := &RedisDenylist{rdb: rdb, records: records, prefix: marker + ":", marker: marker,
		server: redisserver.NewWatch(rdb, marker), genCheck: DefaultGenerationCheck, now: time.Now}
	for _, opt := range opts {
		opt(d)
	}
	return d
}

// rebuilding is the answer of a check while Redis is being rebuilt.
func rebuilding() error {
	return &errcode.UnavailableError{Dependency: "redis (denylist rebuilding)", RetryAfter: time.Second}
}

// Deny implements Denylist: SQL first, then Redis. A token already expired (by the wall
// clock Redis expires keys with) needs no entry.
func (d *RedisDenylist) Deny(ctx context.Context, jti string, until time.Time) error {
	if !until.After(time.Now()) {
		return nil
	}
	if err := d.records.record(ctx, true, deniedRow{JTI: jti, ExpiresAt: until.UnixMicro()}); err != nil {
		return err
	}
	if err := d.rdb.SetArgs(ctx, d.prefix+jti, "1", redis.SetArgs{ExpireAt: until}).Err(); err != nil {
		// The entry is in SQL but maybe not in Redis: drop the marker so that the next
		// check rebuilds Redis from SQL (or fails) rather than answer "not denied". A Redis
		// out of memory refuses the SET but still runs the DEL; for one unreachable, this
		// denylist's next check rebuilds it (a thief who replayed a refresh token will not
		// retry the denial of its own access token), and the bumped SQL generation makes
		// every other denylist on this Redis rebuild it too, within its generation check.
		if d.rdb.Del(context.WithoutCancel(ctx), d.marker).Err() != nil {
			d.missed.Add(1)
			bctx, cancel := afterRevocation(ctx) // even when the caller has given up
			defer cancel()
			if gerr := d.records.bumpGeneration(bctx, d.marker); gerr != nil {
				err = errors.Join(err, gerr)
			}
		}
		return errcode.Unavailable("redis", fmt.Errorf("member: deny token: %w", err))
	}
	// Published. Should this fail, another check publishes it again (the same SET).
	_ = d.records.published(ctx, jti)
	return nil
}

// Denied implements Denylist.
func (d *RedisDenylist) Denied(ctx context.Context, jti string) (bool, error) {
	// Read before the rebuild reads SQL: a denial failing meanwhile is rebuilt again.
	if missed := d.missed.Load(); missed != d.synced.Load() {
		if err := d.rebuild(ctx); err != nil {
			return false, err
		}
		for synced := d.synced.Load(); synced < missed && !d.synced.CompareAndSwap(synced, missed); {
			synced = d.synced.Load()
		}
	}
	for rebuilt := false; ; rebuilt = true {
		// Before reading Redis: the read of the generation also publishes the denials left
		// unpublished on record (see publish), which the entry read below must see.
		gen, err := d.sqlGeneration(ctx)
		if err != nil {
			return false, err
		}
		// One round trip, pipelined rather than MGET: a cluster client splits it by slot.
		var (
			marker *redis.StringCmd
			entry  *redis.IntCmd
		)
		_, err = d.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			marker, entry = p.Get(ctx, d.marker), p.Exists(ctx, d.prefix+jti)
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return false, errcode.Unavailable("redis", fmt.Errorf("member: check the denylist: %w", err))
		}
		built, err := d.built(ctx)
		if err != nil {
			return false, err
		}
		switch {
		case complete(marker.Val(), built, gen):
			return entry.Val() > 0, nil
		case rebuilt, strings.HasPrefix(marker.Val(), buildingPrefix):
			// A rebuild under way, on any server, is left to end: one started over it
			// would make it fail, and with checks arriving on several servers faster
			// than a rebuild runs, none would ever end.
			return false, rebuilding()
		}
		if err := d.rebuild(ctx); err != nil {
			return false, err
		}
	}
}

// built returns the marker of a Redis built by the server now holding it: "ok <run ID>"
// (redisserver.Watch tells a restarted or another server after the check's own command).
// A server that may evict keys fails closed: entries could go while the marker stays.
func (d *RedisDenylist) built(ctx context.Context) (string, error) {
	srv, err := d.server.Current(ctx)
	if err != nil {
		return "", errcode.Unavailable("redis", fmt.Errorf("member: check the denylist: %w", err))
	}
	if srv.Evicts() {
		d.server.Forget() // read again at the next check, until it is fixed
		return "", errcode.Unavailable("redis", fmt.Errorf("member: the denylist's Redis evicts keys (maxmemory %s, maxmemory-policy %s); run it with noeviction",
			srv.Fields["maxmemory"], srv.Fields["maxmemory_policy"]))
	}
	return "ok " + srv.RunID, nil
}

// builtAt is the marker of a Redis built on the server built names ("ok <run ID>") by a
// rebuild that read generation gen: "ok <run ID> <gen>", or "ok <run ID>" for generation
// 0, the marker of the earlier version of this package, which never bumps the generation:
// during a rolling deploy, each version takes the other's marker for complete until a
// denial bumps the generation. (Then they disagree, each rebuilding Redis after the
// other's rebuild: a cost, never a revoked token let through.)
func builtAt(built string, gen int64) string {
	if gen == 0 {
		return built
	}
	return built + " " + strconv.FormatInt(gen, 10)
}

// complete reports whether marker is builtAt(built, n) with n at least gen.
func complete(marker, built string, gen int64) bool {
	rest, ok := strings.CutPrefix(marker, built)
	switch {
	case !ok:
		return false
	case rest == "":
		return gen == 0
	}
	rest, ok = strings.CutPrefix(rest, " ")
	n, err := strconv.ParseInt(rest, 10, 64)
	return ok && err == nil && n >= gen
}

// generation is the denylist generation in SQL as a read that began at at found it.
type generation struct {
	n  int64
	at time.Time
}

// generationRead is a read of the SQL generation; done is closed when it has ended, with
// generation.n or err.
type generationRead struct {
	generation
	err  error
	done chan struct{}
}

// cachedGeneration returns the SQL generation as last read, if that read began less than
// genCheck before now (or after it).
func (d *RedisDenylist) cachedGeneration(now time.Time) (int64, bool) {
	g := d.gen.Load()
	if g == nil || now.Sub(g.at) >= d.genCheck {
		return 0, false
	}
	return g.n, true
}

// sqlGeneration returns the SQL generation as read by a read begun at most genCheck ago.
// One read runs at a time: a check finding the last read too old waits for the one under
// way if it began recently enough, else for the next one, rather than answer from an
// older value, which would stretch the bound by however long SQL takes to answer
// (unbounded when it hangs). A read that fails fails its checks closed. The read belongs
// to none of the checks waiting for it (the first one's giving up does not fail the
// others): it runs on its own, for at most denyTimeout, and each check waits for it as
// long as its own context allows.
func (d *RedisDenylist) sqlGeneration(ctx context.Context) (int64, error) {
	for {
		now := d.now()
		if n, ok := d.cachedGeneration(now); ok {
			return n, nil
		}
		d.genMu.Lock()
		if n, ok := d.cachedGeneration(now); ok { // read meanwhile
			d.genMu.Unlock()
			return n, nil
		}
		r := d.genRead
		mine := r == nil
		if mine {
			r = &generationRead{generation: generation{at: now}, done: make(chan struct{})}
			d.genRead = r
		}
		d.genMu.Unlock()
		if mine {
			go d.readGeneration(ctx, r)
		}
		select {
		case <-r.done:
		case <-ctx.Done():
			return 0, errcode.Unavailable("database", fmt.Errorf("member: read the denylist generation: %w", ctx.Err()))
		}
		if now.Sub(r.at) <= d.genCheck {
			return r.n, r.err
		}
	}
}

// readGeneration runs read r of the SQL generation, detached from ctx (the check that
// started it) but for at most denyTimeout, and ends it.
func (d *RedisDenylist) readGeneration(ctx context.Context, r *generationRead) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), denyTimeout)
	defer cancel()
	r.n, r.err = d.records.generation(ctx, d.marker)
	if r.err == nil {
		r.err = d.publish(ctx)
	}
	if r.err == nil {
		d.gen.Store(&r.generation)
	}
	d.genMu.Lock()
	d.genRead = nil
	d.genMu.Unlock()
	close(r.done)
}

// publish writes into Redis the denials left unpublished on record, and takes them off
// that list. A denial is recorded unpublished, in the transaction that records it (a
// session's revocation, or Deny), and taken off once its server has written it into
// Redis; one left there is a denial whose server failed, or died, in between. So every
// server publishes them with its read of the generation, at most WithGenerationCheck
// apart, before it answers from Redis; a denial published twice is the same SET twice.
func (d *RedisDenylist) publish(ctx context.Context) error {
	const batch = 500
	for {
		rows, err := d.records.unpublished(ctx, batch)
		if err != nil || len(rows) == 0 {
			return err
		}
		now := time.Now()
		jtis := make([]string, len(rows))
		_, err = d.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, r := range rows {
				jtis[i] = r.JTI
				if until := time.UnixMicro(r.ExpiresAt); until.After(now) { // an expired one needs no entry
					p.SetArgs(ctx, d.prefix+r.JTI, "1", redis.SetArgs{ExpireAt: until})
				}
			}
			return nil
		})
		if err != nil {
			return errcode.Unavailable("redis", fmt.Errorf("member: publish the unpublished denials: %w", err))
		}
		if err := d.records.published(ctx, jtis...); err != nil {
			return err
		}
		if len(rows) < batch {
			return nil
		}
	}
}

// markBuilt sets the marker to ARGV[2] (deletes it for "") if it still holds this
// rebuild's token (ARGV[1]): not when Redis lost its data again meanwhile, nor when
// another instance's rebuild took over.
var markBuilt = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
`)

// buildingPrefix starts the marker of a rebuild under way ("rebuilding <token>"), which
// expires. The earlier version's ("building <token>") never does: its rebuild may have
// died mid-way, and a check takes it over rather than wait for it.
const buildingPrefix = "rebuilding "

// rebuildTimeout bounds a rebuild; its marker expires then, so that a rebuild whose
// server died mid-way holds up the others' checks (503) for no longer.
const rebuildTimeout = 5 * time.Second

// rebuild copies the live SQL entries into Redis, then marks Redis complete as of the SQL
// generation it read before them. A rebuild that fails deletes its marker, so that the
// next check, on any server, starts another at once.
func (d *RedisDenylist) rebuild(ctx context.Context) (err error) {
	if !d.building.TryLock() {
		return rebuilding()
	}
	defer d.building.Unlock()
	built, err := d.built(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, rebuildTimeout)
	defer cancel()
	token := buildingPrefix + uuid.NewString()
	fail := func(err error) error {
		return errcode.Unavailable("redis", fmt.Errorf("member: rebuild the denylist: %w", err))
	}
	if err := d.rdb.Set(ctx, d.marker, token, rebuildTimeout).Err(); err != nil {
		return fail(err)
	}
	defer func() {
		if err != nil { // even when the caller has given up, briefly
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			_ = markBuilt.Run(uctx, d.rdb, []string{d.marker}, token, "").Err()
		}
	}()
	// The generation first: a denial that bumped it before this read is in SQL before the
	// entries are read.
	gen, err := d.records.generation(ctx, d.marker)
	if err != nil {
		return err
	}
	live, err := d.records.live(ctx, time.Now())
	if err != nil {
		return err
	}
	for batch := range slices.Chunk(live, 500) {
		_, err := d.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, r := range batch {
				p.SetArgs(ctx, d.prefix+r.JTI, "1", redis.SetArgs{ExpireAt: time.UnixMicro(r.ExpiresAt)})
			}
			return nil
		})
		if err != nil {
			return fail(err)
		}
	}
	ok, err := markBuilt.Run(ctx, d.rdb, []string{d.marker}, token, builtAt(built, gen)).Int()
	if err != nil {
		return fail(err)
	}
	if ok != 1 {
		return rebuilding()
	}
	return nil
}

// SQLDenylist keeps the denylist in a table (member_denied_tokens; CreateSchema creates
// it): the denylist of the embedded default, and the system of record of a RedisDenylist.
// Purge deletes the entries of expired tokens.
type SQLDenylist struct {
	db  bun.IDB
	now func() time.Time
}

// NewSQLDenylist returns a denylist in db; now is the clock deciding which entries are
// expired (nil: time.Now).
func NewSQLDenylist(db bun.IDB, now func() time.Time) *SQLDenylist {
	if now == nil {
		now = time.Now
	}
	return &SQLDenylist{db: db, now: now}
}

type deniedRow struct {
	bun.BaseModel `bun:"table:member_denied_tokens"`

	JTI       string `bun:"jti,pk"`
	ExpiresAt int64  `bun:"expires_at"`
}

// unpublishedRow is a denial on record that may not be in Redis yet
// (member_denials_unpublished; see RedisDenylist.publish).
type unpublishedRow struct {
	bun.BaseModel `bun:"table:member_denials_unpublished"`

	JTI       string `bun:"jti,pk"`
	ExpiresAt int64  `bun:"expires_at"`
}

// Deny implements Denylist.
func (d *SQLDenylist) Deny(ctx context.Context, jti string, until time.Time) error {
	return d.record(ctx, false, deniedRow{JTI: jti, ExpiresAt: until.UnixMicro()})
}

// record writes entries as recordDenials does, in a transaction of its own.
func (d *SQLDenylist) record(ctx context.Context, unpublished bool, entries ...deniedRow) error {
	err := sqlutil.InTx(ctx, d.db, func(ctx context.Context, tx bun.Tx) error {
		return recordDenials(ctx, tx, unpublished, entries...)
	})
	if err != nil {
		return errcode.Unavailable("database", fmt.Errorf("member: deny token: %w", err))
	}
	return nil
}

// recordDenials writes entries into member_denied_tokens in db, leaving those already
// there, and with unpublished into member_denials_unpublished too, for a RedisDenylist
// to publish. Inside a transaction a duplicate fails only its own statement, on MySQL and
// SQLite alike.
func recordDenials(ctx context.Context, db bun.IDB, unpublished bool, entries ...deniedRow) error {
	for i := range entries {
		if _, err := db.NewInsert().Model(&entries[i]).Exec(ctx); err != nil && !sqlutil.IsDuplicateKey(err) {
			return err
		}
		if !unpublished {
			continue
		}
		u := unpublishedRow{JTI: entries[i].JTI, ExpiresAt: entries[i].ExpiresAt}
		if _, err := db.NewInsert().Model(&u).Exec(ctx); err != nil && !sqlutil.IsDuplicateKey(err) {
			return err
		}
	}
	return nil
}

// unpublished returns at most limit of the denials left unpublished.
func (d *SQLDenylist) unpublished(ctx context.Context, limit int64) ([]unpublishedRow, error) {
	var rows []unpublishedRow
	if err := d.db.NewSelect().Model(&rows).Limit(limit).Scan(ctx); err != nil {
		return nil, errcode.Unavailable("database", fmt.Errorf("member: read the unpublished denials: %w", err))
	}
	return rows, nil
}

// published takes the denials jtis off the unpublished list.
func (d *SQLDenylist) published(ctx context.Context, jtis ...string) error {
	if _, err := d.db.NewDelete().Model((*unpublishedRow)(nil)).Where("jti IN (?)", bun.List(jtis)).Exec(ctx); err != nil {
		return errcode.Unavailable("database", fmt.Errorf("member: mark denials published: %w", err))
	}
	return nil
}

// Denied implements Denylist.
func (d *SQLDenylist) Denied(ctx context.Context, jti string) (bool, error) {
	n, err := d.db.NewSelect().Model((*deniedRow)(nil)).Where("jti = ?", jti).Count(ctx)
	if err != nil {
		return false, errcode.Unavailable("database", fmt.Errorf("member: check the denylist: %w", err))
	}
	return n > 0, nil
}

// live returns the entries of tokens not expired by now.
func (d *SQLDenylist) live(ctx context.Context, now time.Time) ([]deniedRow, error) {
	var rows []deniedRow
	if err := d.db.NewSelect().Model(&rows).Where("expires_at > ?", now.UnixMicro()).Scan(ctx); err != nil {
		return nil, errcode.Unavailable("database", fmt.Errorf("member: read the denylist: %w", err))
	}
	return rows, nil
}

// generationRow is a denylist's generation (member_denylist_generation), bumped by each
// denial that reached SQL but maybe neither Redis nor the marker's removal.
type generationRow struct {
	bun.BaseModel `bun:"table:member_denylist_generation"`

	Name string `bun:"name,pk"`
	Gen  int64  `bun:"gen"`
}

// generation reads the generation of the denylist name (0 before its first bump).
func (d *SQLDenylist) generation(ctx context.Context, name string) (int64, error) {
	row := generationRow{Name: name}
	if err := d.db.NewSelect().Model(&row).WherePK().Scan(ctx); err != nil && !sqlutil.IsNoRows(err) {
		return 0, errcode.Unavailable("database", fmt.Errorf("member: read the denylist generation: %w", err))
	}
	return row.Gen, nil
}

// bumpGeneration adds one to the generation of the denylist name.
func (d *SQLDenylist) bumpGeneration(ctx context.Context, name string) error {
	q := "INSERT INTO member_denylist_generation (name, gen) VALUES (?, 1) ON DUPLICATE KEY UPDATE gen = gen + 1"
	if sqlutil.IsSQLite(d.db) {
		q = "INSERT INTO member_denylist_generation (name, gen) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET gen = gen + 1"
	}
	if _, err := d.db.ExecContext(ctx, q, name); err != nil {
		return errcode.Unavailable("database", fmt.Errorf("member: bump the denylist generation: %w", err))
	}
	return nil
}

// Purge deletes the entries of tokens expired by now and returns how many.
func (d *SQLDenylist) Purge(ctx context.Context) (int64, error) {
	now := d.now().UnixMicro()
	// Those of the embedded mode too, where nothing publishes them.
	if _, err := d.db.NewDelete().Model((*unpublishedRow)(nil)).Where("expires_at <= ?", now).Exec(ctx); err != nil {
		return 0, fmt.Errorf("member: purge the unpublished denials: %w", err)
	}
	res, err := d.db.NewDelete().Model((*deniedRow)(nil)).Where("expires_at <= ?", now).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("member: purge the denylist: %w", err)
	}
	return res.RowsAffected()
}

// RunPurger calls Purge every interval until ctx is done; it returns ctx's error. Failed
// purges are retried at the next tick (an entry kept longer is harmless).
func (d *SQLDenylist) RunPurger(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			_, _ = d.Purge(ctx)
		}
	}
}
