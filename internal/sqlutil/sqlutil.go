// Package sqlutil is the SQL plumbing shared by the commercekit packages that store data
// through bun: running an operation in the caller's transaction or in one of its own with a
// bounded retry, recognising the MySQL and SQLite errors that mean "retry" or "duplicate
// key", and translating a lost or unreachable database into errcode.ErrUnavailable
// (through internal/depfail, the one classifier of dependency failures).
package sqlutil

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/commercekit/commercekit/internal/backoff"
	"github.com/commercekit/commercekit/internal/depfail"
)

// DefaultAttempts is how many times InTx tries a transaction of its own that fails with a
// retryable error (deadlock, lock wait timeout, busy database).
const DefaultAttempts = 8

// maxPause caps the pause between two attempts.
const maxPause = 250 * time.Millisecond

// InTx runs fn in a transaction on db.
//
// When db is already a transaction (a bun.Tx, typically from the caller's RunInTx), fn runs
// inside it under a savepoint: if fn fails, only its own writes are undone and the caller's
// transaction stays usable; nothing is retried, since a deadlock aborts the caller's whole
// transaction and only its owner can run it again.
//
// Otherwise InTx begins a transaction of its own, commits it when fn succeeds, and retries
// it up to DefaultAttempts times when it fails with a deadlock or a busy SQLite database,
// pausing a random time up to an exponentially growing bound ("full jitter") between two
// attempts, so transactions that deadlocked each other do not meet again in lockstep. fn
// must therefore be safe to run again from the start. A MySQL lock wait timeout (1205) is
// not retried: its statement has already waited the server's whole lock wait
// (innodb_lock_wait_timeout for a row, lock_wait_timeout for a table or a global read lock
// a backup holds), and waiting it again and again only holds the caller for several of
// them (8 × 50 s with the server's default). It is returned, matching IsRetryable, for the
// caller to answer "busy, retry later". So is SQLite's busy error on a connection with a
// busy timeout once the attempt took that long: its busy handler already waited it out
// (10 s with refserver's pragmas, its one connection held meanwhile).
//
// When ctx comes from AllOrNothing, fn runs in the caller's transaction without the
// savepoint, and its failure matches ErrNotUndone.
//
// An error saying the database was lost or unreachable is returned through Unavailable;
// a transaction of its own whose ctx ended before its commit fails with an error matching
// ctx.Err() (database/sql alone says sql.ErrTxDone).
func InTx(ctx context.Context, db bun.IDB, fn func(ctx context.Context, tx bun.Tx) error) error {
	marked := ctx.Value(allOrNothing{}) != nil
	if marked {
		ctx = context.WithValue(ctx, allOrNothing{}, nil) // the mark is for this call alone
	}
	if tx, ok := db.(bun.Tx); ok {
		if marked {
			if err := fn(ctx, tx); err != nil {
				return Unavailable(db, notUndone{err})
			}
			return nil
		}
		return Unavailable(db, savepoint(ctx, tx, fn))
	}
	return Retry(ctx, db, func(ctx context.Context) error { return db.RunInTx(ctx, nil, fn) })
}

// open counts the savepoints InTx has open in each transaction (by its *sql.Tx), which
// names the next one. It is the one state the package keeps: an entry lives while a
// savepoint of its transaction is open, and is removed when the last one is released or
// rolled back to.
var open = struct {
	sync.Mutex
	depth map[*sql.Tx]int
}{depth: make(map[*sql.Tx]int)}

// enter counts a savepoint opened in tx and returns its depth (1 for the outermost).
func enter(tx *sql.Tx) int {
	open.Lock()
	defer open.Unlock()
	open.depth[tx]++
	return open.depth[tx]
}

// leave counts a savepoint of tx closed.
func leave(tx *sql.Tx) {
	open.Lock()
	defer open.Unlock()
	if open.depth[tx]--; open.depth[tx] <= 0 {
		delete(open.depth, tx)
	}
}

// savepoint runs fn in tx under a savepoint, rolled back to when fn fails (or panics) or
// the savepoint cannot be released, and released when fn succeeds, like bun's
// Tx.RunInTx. Unlike bun, which names each savepoint at random, it names it by its depth
// in tx (commercekit_sp1, commercekit_sp2 in a call nested in it...): names need only
// differ among the savepoints open at once, and a fixed text keeps SAVEPOINT one
// statement digest (performance_schema, ProxySQL, database monitors) instead of one per
// call, which filled MariaDB's digest table within one flash sale. The depth is counted
// per transaction, not carried by ctx: a nested call given another ctx than its fn's (a
// closure capturing the caller's) must not reuse the name of an open savepoint, which on
// MySQL replaces it, so that the enclosing call could no longer undo its writes.
func savepoint(ctx context.Context, tx bun.Tx, fn func(ctx context.Context, tx bun.Tx) error) (err error) {
	depth := enter(tx.Tx)
	defer leave(tx.Tx)
	name := "commercekit_sp" + strconv.Itoa(depth)
	if _, err := tx.ExecContext(ctx, "SAVEPOINT "+name); err != nil {
		return err
	}
	released := false
	defer func() {
		// fn failed or panicked, or the release did (ctx ended after fn's last statement):
		// undo its writes, even if ctx has ended meanwhile, so that an error means they
		// are not in the caller's transaction.
		if !released {
			if _, rerr := tx.ExecContext(context.WithoutCancel(ctx), "ROLLBACK TO SAVEPOINT "+name); rerr != nil && err != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()
	if err := fn(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT "+name); err != nil {
		return err
	}
	released = true
	return nil
}

// Retry runs fn, a statement outside any transaction (autocommit) or a transaction fn
// begins itself, on db, again after a deadlock or a busy SQLite database, as InTx does,
// and returns its last error through Unavailable. A single UPDATE can deadlock too: its
// secondary-index changes take locks of their own.
func Retry(ctx context.Context, db bun.IDB, fn func(ctx context.Context) error) error {
	var err error
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err = fn(ctx)
		if err == nil || attempt >= DefaultAttempts || !IsRetryable(err) || WaitedOut(ctx, db, err, time.Since(start)) {
			return Unavailable(db, ended(ctx, err))
		}
		if backoff.Sleep(ctx, backoff.Full(attempt, 2*time.Millisecond, maxPause)) != nil {
			return errors.Join(err, ctx.Err())
		}
	}
}

// ended adds ctx's error to err when err is sql.ErrTxDone and ctx has ended: database/sql
// rolls a transaction back as soon as its context ends, so a deadline passing between the
// last statement and the commit makes Commit fail with ErrTxDone, which says nothing of why
// (and would be answered as an internal error rather than as the timeout it is).
func ended(ctx context.Context, err error) error {
	if ctx.Err() == nil || !errors.Is(err, sql.ErrTxDone) {
		return err
	}
	return fmt.Errorf("%w: %w", ctx.Err(), err)
}

type allOrNothing struct{}

// ErrNotUndone matches the failure of a call InTx ran without a savepoint (AllOrNothing):
// its writes stay in the transaction until the owner rolls it back, so the caller must
// not go on in it (no recovering, say, by answering a replay from what is stored).
var ErrNotUndone = errors.New("sqlutil: the failed call's writes are not undone; roll the transaction back")

// notUndone is a failure matching ErrNotUndone; its message is the failure's own.
type notUndone struct{ error }

func (e notUndone) Is(target error) bool { return target == ErrNotUndone }
func (e notUndone) Unwrap() error        { return e.error }

// AllOrNothing returns ctx for calls into a transaction whose owner rolls the whole
// transaction back on any error they return: InTx then runs in that transaction without a
// savepoint, saving its two round trips (SAVEPOINT, RELEASE) per call. A savepoint only
// matters to an owner that goes on after a failed call, so the owner marks exactly the
// calls it never goes on after. The first InTx reached consumes the mark: the calls fn
// makes get savepoints again (fn may go on after their failures), and an InTx that begins
// a transaction of its own ignores it.
func AllOrNothing(ctx context.Context) context.Context {
	return context.WithValue(ctx, allOrNothing{}, true)
}

// Unavailable translates an error of db that says the database could not be reached or
// the connection was lost (refused, reset, timed out, "invalid connection", a server
// shutting down...) into an *errcode.UnavailableError naming the dialect ("mysql",
// "sqlite"), which still matches everything err matched. Any other error, and nil, is
// returned unchanged.
func Unavailable(db bun.IDB, err error) error {
	if err == nil {
		return nil
	}
	return depfail.Wrap(db.Dialect().Name().String(), err)
}

// IsTx reports whether db is a transaction (so operations on it join the caller's transaction).
func IsTx(db bun.IDB) bool {
	_, ok := db.(bun.Tx)
	return ok
}

// MySQL error numbers.
const (
	mysqlMissingIndex    = 1091
	mysqlDuplicateIndex  = 1061
	mysqlDuplicateEntry  = 1062
	mysqlLockWaitTimeout = 1205
	mysqlDeadlock        = 1213
)

// IsRetryable reports whether err is a transient conflict after which running the whole
// transaction again may succeed: a MySQL deadlock (1213) or lock wait timeout (1205), or a
// busy or locked SQLite database. InTx and Retry run a transaction again at once after all
// but a lock wait timeout, or SQLite's busy error after its busy timeout, which already
// waited (see InTx): those are for the caller's client to retry later.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == mysqlDeadlock || me.Number == mysqlLockWaitTimeout
	}
	code, ok := sqliteCode(err)
	return ok && (code&0xff == sqliteBusy || code&0xff == sqliteLocked)
}

// SQLite's primary result codes for a busy database and a locked table.
const (
	sqliteBusy   = 5
	sqliteLocked = 6
)

// sqliteCode returns the (extended) result code of the SQLite driver's error in err's
// chain: modernc.org/sqlite's *sqlite.Error (its Code method) or mattn/go-sqlite3's
// sqlite3.Error (its ExtendedCode field, read by reflection: that driver needs cgo). The
// error's text is no evidence: it may quote anything, a handler's input included ("the
// product 'database is locked' overflows" was taken for a busy database, and its event
// retried for ever).
func sqliteCode(err error) (int, bool) {
	var coded interface{ Code() int }
	if errors.As(err, &coded) && reflect.TypeOf(coded).Elem().PkgPath() == "modernc.org/sqlite" {
		return coded.Code(), true
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		v := reflect.ValueOf(e)
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		if v.Kind() == reflect.Struct && v.Type().PkgPath() == "github.com/mattn/go-sqlite3" && v.Type().Name() == "Error" {
			if f := v.FieldByName("ExtendedCode"); f.IsValid() && f.CanInt() {
				return int(f.Int()), true
			}
		}
	}
	return 0, false
}

// WaitedOut reports whether err, a retryable failure of an attempt on db that took took,
// came only once the attempt had waited the server's whole lock wait for a lock held
// elsewhere, so that running it again at once would wait again: a MySQL lock wait timeout
// (1205), or SQLite's SQLITE_BUSY itself (not SQLITE_BUSY_SNAPSHOT, nor a locked table) on
// a connection with a busy timeout, after at least half that long (the busy handler waited
// it out: it adds up its sleeps from a table of delays, not the clock, and was seen to give
// up at 285 ms of a 300-ms timeout; without a busy timeout, or in a rollback journal's
// deadlock, SQLite answers busy at once). The busy timeout is read (PRAGMA busy_timeout)
// only for such an error.
func WaitedOut(ctx context.Context, db bun.IDB, err error, took time.Duration) bool {
	if IsLockWaitTimeout(err) {
		return true
	}
	if code, ok := sqliteCode(err); !ok || code != sqliteBusy || ctx.Err() != nil {
		return false
	}
	var ms int64
	if db.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&ms) != nil || ms <= 0 {
		return false
	}
	return took >= time.Duration(ms)*time.Millisecond/2
}

// IsLockWaitTimeout reports whether err is MySQL's lock wait timeout (1205): a statement
// that waited the server's whole lock wait for a lock held elsewhere. Retrying it at once
// waits again; see InTx.
func IsLockWaitTimeout(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == mysqlLockWaitTimeout
}

// IsDuplicateKey reports whether err is a unique or primary key violation.
func IsDuplicateKey(err error) bool {
	if err == nil {
		return false
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == mysqlDuplicateEntry
	}
	msg := err.Error()
	return strings.Contains(msg, "UNIQUE constraint failed") || strings.Contains(msg, "PRIMARY KEY constraint failed")
}

// IsDuplicateIndex reports MySQL's "duplicate key name" (1061), the answer to creating an
// index that exists: MySQL, unlike MariaDB and SQLite, has no CREATE INDEX IF NOT EXISTS.
func IsDuplicateIndex(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == mysqlDuplicateIndex
}

// IsNoRows reports whether err says a query found no row.
func IsNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// IsSQLite reports whether db speaks SQLite (no SELECT ... FOR UPDATE, no SKIP LOCKED;
// writers are serialised by the database itself).
func IsSQLite(db bun.IDB) bool { return db.Dialect().Name() == dialect.SQLite }

// ForUpdate adds FOR UPDATE to q where the dialect has it. On SQLite, which has no row locks,
// it leaves q as it is: there a write transaction already excludes every other writer.
func ForUpdate(q *bun.SelectQuery) *bun.SelectQuery {
	if IsSQLite(q.DB()) {
		return q
	}
	return q.For("UPDATE")
}

// UpdateByPK starts an UPDATE of the table of T for a WHERE that names the row's primary
// key and conditions on other columns (a conditional transition), reading the row by the
// primary key only (FORCE INDEX on MySQL). Left to itself, InnoDB's optimizer may read the
// row through a secondary index that starts with one of those other columns, and a locking
// read there takes next-key locks: every update gap-locks its neighbours in that index, and
// rows inserted or moved beside it wait for its transaction.
func UpdateByPK[T any](db bun.IDB) *bun.UpdateQuery {
	q := db.NewUpdate().Model((*T)(nil))
	if expr, args, ok := primaryOnly[T](db); ok {
		q = q.ModelTableExpr(expr, args...)
	}
	return q
}

// SelectByPK starts a SELECT of rows of the table of T into dest for a WHERE that names
// their primary keys, reading them by the primary key only (FORCE INDEX on MySQL), for
// the reason UpdateByPK gives: a locking read of rows named by ID then locks those rows
// and no gap.
func SelectByPK[T any](db bun.IDB, dest *[]T) *bun.SelectQuery {
	q := db.NewSelect().Model(dest)
	if expr, args, ok := primaryOnly[T](db); ok {
		q = q.ModelTableExpr(expr, args...)
	}
	return q
}

// primaryOnly returns the table expression of T that reads it by its primary key only,
// where the dialect has index hints (MySQL).
func primaryOnly[T any](db bun.IDB) (string, []any, bool) {
	if db.Dialect().Name() != dialect.MySQL {
		return "", nil, false
	}
	t := db.Dialect().Tables().Get(reflect.TypeFor[T]())
	return "? AS ? FORCE INDEX (PRIMARY)", []any{t.SQLName, t.SQLAlias}, true
}

// Columns adds to q the columns of the table of T, each as alias.column. A query that
// selects a model's row beside other expressions (a join, a subquery) names them rather
// than alias.*: a column this build does not know, added by a newer release's migration
// during a rolling deploy, must not make the row unreadable.
func Columns[T any](q *bun.SelectQuery, alias string) *bun.SelectQuery {
	for _, f := range q.Dialect().Tables().Get(reflect.TypeFor[T]()).Fields {
		q = q.ColumnExpr("?.?", bun.Ident(alias), bun.Ident(f.Name))
	}
	return q
}
