package member

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
// fixed.
//
// A denial is recorded unpublished, in the transaction that records it (a session's
// revocation, or Deny's own), and taken off that list once its server has written it
// into Redis. Every check publishes what is left there before it answers (see publish),
// reading that list at most every WithPublishCheck (1 s by default; one read at a time,
// no SQL statement per check in between). So a denial whose server failed to write it
// into Redis (unreachable, paused, partitioned away from that server alone), or died
// before it could, reaches every server within that interval; a check that cannot read
// the list fails closed (503). The server that failed to write a denial, when it could
// not remove the marker either, also rebuilds Redis before its next check. What remains
// is the interval itself. It is the denylist of full mode; run the SQLDenylist's purger
// too.
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
	// publishEvery is how long a check may answer after the last publishing began, by the
	// clock now; published is when that was; publishing is the one under way (under
	// publishMu).
	publishEvery time.Duration
	now          func() time.Time
	published    atomic.Pointer[time.Time]
	publishMu    sync.Mutex
	publishing   *publishRun
}

// DefaultPublishCheck is how long a RedisDenylist answers from Redis after it last
// published the unpublished denials, unless WithPublishCheck says otherwise.
const DefaultPublishCheck = time.Second

// RedisDenylistOption configures a RedisDenylist.
type RedisDenylistOption func(*RedisDenylist)

// WithPublishCheck sets how long a RedisDenylist answers from Redis after it last
// published the denials left unpublished on record (DefaultPublishCheck): the longest a
// denial that another server failed to write into Redis goes unseen by this denylist. 0
// publishes at every check (a SQL statement per check); a negative d counts as 0.
func WithPublishCheck(d time.Duration) RedisDenylistOption {
	return func(rd *RedisDenylist) { rd.publishEvery = max(d, 0) }
}

// NewRedisDenylist returns a denylist in rdb, under keys "commercekit:denied:<jti>" and the
// marker "commercekit:denied", written through to records.
func NewRedisDenylist(rdb redis.UniversalClient, records *SQLDenylist, opts ...RedisDenylistOption) *RedisDenylist {
	const marker = "commercekit:denied"
	d := &RedisDenylist{rdb: rdb, records: records, prefix: marker + ":", marker: marker,
		server: redisserver.NewWatch(rdb, marker), publishEvery: DefaultPublishCheck, now: time.Now}
	for _, opt := range opts {
		opt(d)
	}
	return d
}

// rebuilding is the answer of a check while Redis is being rebuilt.
func rebuilding() error {
	return &errcode.UnavailableError{Dependency: "redis (denylist rebuilding)", RetryAfter: time.Second}
}

// recorder is a denylist of this package. A session's revocation records the denials of
// its tokens in its own transaction, as recordDenials with recordsUnpublished() does; once it
// has committed, publishRecorded makes them visible where the denylist answers from,
// without writing them again.
type recorder interface {
	recordsUnpublished() bool
	publishRecorded(ctx context.Context, entries ...deniedRow) error
}

var (
	_ recorder = (*RedisDenylist)(nil)
	_ recorder = (*SQLDenylist)(nil)
)

// Deny implements Denylist: SQL first, then Redis. A token already expired (by the wall
// clock Redis expires keys with) needs no entry.
func (d *RedisDenylist) Deny(ctx context.Context, jti string, until time.Time) error {
	if !until.After(time.Now()) {
		return nil
	}
	entry := deniedRow{JTI: jti, ExpiresAt: until.UnixMicro()}
	if err := d.records.record(ctx, true, entry); err != nil {
		return err
	}
	return d.publishRecorded(ctx, entry)
}

// recordsUnpublished implements recorder: its denials are recorded unpublished until they are in
// Redis.
func (d *RedisDenylist) recordsUnpublished() bool { return true }

// publishRecorded implements recorder: it writes the entries into Redis (those not expired)
// and takes them off the unpublished list.
func (d *RedisDenylist) publishRecorded(ctx context.Context, entries ...deniedRow) error {
	now := time.Now()
	jtis := make([]string, len(entries))
	_, err := d.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range entries {
			jtis[i] = e.JTI
			if until := time.UnixMicro(e.ExpiresAt); until.After(now) { // an expired one needs no entry
				p.SetArgs(ctx, d.prefix+e.JTI, "1", redis.SetArgs{ExpireAt: until})
			}
		}
		return nil
	})
	if err != nil {
		// The entries are in SQL but maybe not in Redis: drop the marker so that the next
		// check rebuilds Redis from SQL (or fails) rather than answer "not denied". A Redis
		// out of memory refuses the SET but still runs the DEL; for one unreachable, this
		// denylist's next check rebuilds it (a thief who replayed a refresh token will not
		// retry the denial of its own access token), and every other denylist publishes
		// them from the unpublished list within its publish check.
		if d.rdb.Del(context.WithoutCancel(ctx), d.marker).Err() != nil {
			d.missed.Add(1)
		}
		return errcode.Unavailable("redis", fmt.Errorf("member: write denials into Redis: %w", err))
	}
	// Published. Should this fail, another check publishes them again (the same SETs).
	_ = d.records.published(ctx, jtis...)
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
		// Before reading Redis, which must hold them: the denials left unpublished.
		if err := d.catchUp(ctx); err != nil {
			return false, err
		}
		// One round trip, pipelined rather than MGET: a cluster client splits it by slot.
		var (
			marker *redis.StringCmd
			entry  *redis.IntCmd
		)
		_, err := d.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
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
		case marker.Val() == built:
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

// publishRun is a run of publish that began at at; done is closed when it has ended,
// with err.
type publishRun struct {
	at   time.Time
	err  error
	done chan struct{}
}

// publishedSince reports whether the last successful publishing began less than
// publishEvery before now (or after it).
func (d *RedisDenylist) publishedSince(now time.Time) bool {
	at := d.published.Load()
	return at != nil && now.Sub(*at) < d.publishEvery
}

// catchUp returns once a publishing begun at most publishEvery ago has succeeded. One
// runs at a time: a check finding the last one too old waits for the one under way if
// it began recently enough, else for the next one, rather than answer from an older
// state, which would stretch the bound by however long SQL takes to answer (unbounded
// when it hangs). One that fails fails its checks closed. It belongs to none of the
// checks waiting for it (the first one's giving up does not fail the others): it runs
// on its own, for at most denyTimeout, and each check waits for it as long as its own
// context allows.
func (d *RedisDenylist) catchUp(ctx context.Context) error {
	for {
		now := d.now()
		if d.publishedSince(now) {
			return nil
		}
		d.publishMu.Lock()
		if d.publishedSince(now) { // meanwhile
			d.publishMu.Unlock()
			return nil
		}
		r := d.publishing
		mine := r == nil
		if mine {
			r = &publishRun{at: now, done: make(chan struct{})}
			d.publishing = r
		}
		d.publishMu.Unlock()
		if mine {
			go d.runPublish(ctx, r)
		}
		select {
		case <-r.done:
		case <-ctx.Done():
			return errcode.Unavailable("database", fmt.Errorf("member: publish the unpublished denials: %w", ctx.Err()))
		}
		if now.Sub(r.at) <= d.publishEvery {
			return r.err
		}
	}
}

// runPublish runs publishing r, detached from ctx (the check that started it) but for
// at most denyTimeout, and ends it.
func (d *RedisDenylist) runPublish(ctx context.Context, r *publishRun) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), denyTimeout)
	defer cancel()
	if r.err = d.publish(ctx); r.err == nil {
		d.published.Store(&r.at)
	}
	d.publishMu.Lock()
	d.publishing = nil
	d.publishMu.Unlock()
	close(r.done)
}

// publish writes into Redis the denials left unpublished on record, and takes them off
// that list. A denial is recorded unpublished, in the transaction that records it (a
// session's revocation, or Deny), and taken off once its server has written it into
// Redis; one left there is a denial whose server failed, or died, in between. So every
// server publishes them, at most WithPublishCheck apart, before it answers from Redis;
// a denial published twice is the same SET twice.
func (d *RedisDenylist) publish(ctx context.Context) error {
	const batch = 500
	for {
		rows, err := d.records.unpublished(ctx, batch)
		if err != nil || len(rows) == 0 {
			return err
		}
		entries := make([]deniedRow, len(rows))
		for i, r := range rows {
			entries[i] = deniedRow(r)
		}
		if err := d.publishRecorded(ctx, entries...); err != nil {
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

// rebuild copies the live SQL entries into Redis, then marks Redis complete. A rebuild
// that fails deletes its marker, so that the next check, on any server, starts another
// at once.
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
	ok, err := markBuilt.Run(ctx, d.rdb, []string{d.marker}, token, built).Int()
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

// recordsUnpublished implements recorder: nothing publishes its denials, they are read where
// they are recorded.
func (d *SQLDenylist) recordsUnpublished() bool { return false }

// publishRecorded implements recorder: entries on record are on the list already.
func (d *SQLDenylist) publishRecorded(context.Context, ...deniedRow) error { return nil }

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

// published takes the denials jtis off the unpublished list. The DELETE deadlocks with
// revocations writing denials in its range meanwhile (the gaps it locks, on MySQL), and is
// retried then, as their transactions are.
func (d *SQLDenylist) published(ctx context.Context, jtis ...string) error {
	err := sqlutil.Retry(ctx, d.db, func(ctx context.Context) error {
		_, err := d.db.NewDelete().Model((*unpublishedRow)(nil)).Where("jti IN (?)", bun.List(jtis)).Exec(ctx)
		return err
	})
	if err != nil {
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
