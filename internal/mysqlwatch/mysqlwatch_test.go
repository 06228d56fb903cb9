package mysqlwatch_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/mysqlwatch"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// watched opens a pool on the server of dsn through a running Watch, and returns the
// changes of state it has reported so far. The read and write
// timeouts are an hour: a statement on a server that does not answer ends only if the
// Watch ends it.
func watched(t *testing.T, dsn string) (*mysqlwatch.Watch, *sql.DB, func() []bool) {
	t.Helper()
	cfg := testkit.Must(mysql.ParseDSN(dsn))(t)
	cfg.ReadTimeout, cfg.WriteTimeout = time.Hour, time.Hour
	var (
		mu      sync.Mutex
		changes []bool
	)
	w := testkit.Must(mysqlwatch.New(cfg, mysqlwatch.Options{Log: slog.New(slog.DiscardHandler),
		OnChange: func(up bool) { mu.Lock(); changes = append(changes, up); mu.Unlock() }}))(t)
	db := sql.OpenDB(testkit.Must(w.Connector())(t))
	t.Cleanup(func() { db.Close() })
	testkit.Background(t, w.Run)
	return w, db, func() []bool { mu.Lock(); defer mu.Unlock(); return slices.Clone(changes) }
}

// refused checks that err is the Watch's own refusal: a dependency failure with a retry
// hint, raised without dialing.
func refused(t *testing.T, err error) {
	t.Helper()
	require.ErrorIs(t, err, mysqlwatch.ErrDown)
	assert.ErrorIs(t, err, errcode.ErrUnavailable)
	assert.Equal(t, time.Second, errcode.RetryAfter(err, 0))
}

// TestPausedServer: a statement waiting on a paused server (connections accepted,
// nothing answered) ends with a dependency failure once the Watch has found the server
// not answering, although its read timeout is an hour; later ones are refused without
// dialing; after the unpause the pool works again.
func TestPausedServer(t *testing.T) {
	own, dsn := testenv.OwnMySQL(t)
	w, db, changes := watched(t, dsn)
	ctx := t.Context()
	held := testkit.Must(db.Conn(ctx))(t)
	require.NoError(t, held.PingContext(ctx))

	own.Pause(t)
	_, err := held.ExecContext(ctx, "SELECT 1")
	require.Error(t, err, "the statement in flight when the server paused")
	assert.True(t, depfail.Is(err), "%v is a dependency failure", err)
	assert.False(t, w.Up())
	_, err = db.ExecContext(ctx, "SELECT 1")
	refused(t, err)

	own.Unpause(t)
	require.Eventually(t, w.Up, time.Minute, 50*time.Millisecond)
	var one int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT 1").Scan(&one))
	assert.Equal(t, 1, one)
	assert.Equal(t, []bool{false, true}, changes())
}

// TestStoppedServer: a server that is down (refusing connections) is found down, its
// connections are refused without dialing, and it is found up again once restarted.
func TestStoppedServer(t *testing.T) {
	own, dsn := testenv.OwnMySQL(t)
	w, db, changes := watched(t, dsn)
	ctx := t.Context()
	require.NoError(t, db.PingContext(ctx))

	own.Stop(t, 0)
	require.Eventually(t, func() bool { return !w.Up() }, time.Minute, 50*time.Millisecond)
	_, err := db.ExecContext(ctx, "SELECT 1")
	refused(t, err)

	own.Start(t)
	require.Eventually(t, w.Up, time.Minute, 50*time.Millisecond)
	require.NoError(t, db.PingContext(ctx))
	assert.Equal(t, []bool{false, true}, changes())
}

// TestAnsweringServerIsUp: a server that answers, even with an error (here: access
// denied), is up, and its error reaches the caller as it is.
func TestAnsweringServerIsUp(t *testing.T) {
	_, dsn := testenv.OwnMySQL(t)
	cfg := testkit.Must(mysql.ParseDSN(dsn))(t)
	cfg.Passwd = "wrong"
	var changes []bool
	w := testkit.Must(mysqlwatch.New(cfg, mysqlwatch.Options{Log: slog.New(slog.DiscardHandler),
		OnChange: func(up bool) { changes = append(changes, up) }}))(t)
	db := sql.OpenDB(testkit.Must(w.Connector())(t))
	defer db.Close()
	var p mysqlwatch.Prober
	for range 3 {
		w.Step(t.Context(), &p)
	}
	assert.True(t, w.Up())
	assert.Empty(t, changes)
	var me *mysql.MySQLError
	err := db.PingContext(t.Context())
	require.True(t, errors.As(err, &me), "%v", err)
	assert.EqualValues(t, 1045, me.Number) // access denied
}

// TestSilentServer: a server that accepts connections and never answers is down after
// Failures unanswered probes in a row, not before, and then refused without dialing.
func TestSilentServer(t *testing.T) {
	ln := testkit.Must(net.Listen("tcp", "127.0.0.1:0"))(t)
	defer ln.Close()
	go func() { // accept, and say nothing
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User = "tcp", ln.Addr().String(), "nobody"
	w := testkit.Must(mysqlwatch.New(cfg, mysqlwatch.Options{Timeout: 100 * time.Millisecond, Failures: 3,
		Log: slog.New(slog.DiscardHandler)}))(t)
	db := sql.OpenDB(testkit.Must(w.Connector())(t))
	defer db.Close()
	var p mysqlwatch.Prober
	for range 2 {
		w.Step(t.Context(), &p)
	}
	assert.True(t, w.Up(), "two probes unanswered of three")
	w.Step(t.Context(), &p)
	assert.False(t, w.Up())
	_, err := db.ExecContext(t.Context(), "SELECT 1")
	refused(t, err)
}

func TestNewRefusesNegativeOptions(t *testing.T) {
	for name, o := range map[string]mysqlwatch.Options{
		"Every": {Every: -1}, "Timeout": {Timeout: -1}, "ConnectTimeout": {ConnectTimeout: -1}, "MaxConnAge": {MaxConnAge: -1},
		"Failures": {Failures: -1},
	} {
		_, err := mysqlwatch.New(mysql.NewConfig(), o)
		assert.Error(t, err, name)
	}
}

// Example opens a pool whose connections fail fast while the server does not answer.
func Example() {
	cfg, err := mysql.ParseDSN("user:password@tcp(127.0.0.1:3306)/shop?parseTime=true")
	if err != nil {
		panic(err)
	}
	w, err := mysqlwatch.New(cfg, mysqlwatch.Options{})
	if err != nil {
		panic(err)
	}
	connector, err := w.Connector()
	if err != nil {
		panic(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() { _ = w.Run(ctx) }() // until shutdown
	// ... use db; while the server does not answer, its statements fail at once with an
	// error matching errcode.ErrUnavailable.
}

// proxy forwards each new connection to the address target returns at the time (a
// failover behind one address: connections made before a switch stay where they are),
// after holding it back for delay (a server that takes that long to accept a connection).
func proxy(t *testing.T, target func() string, delay time.Duration) string {
	t.Helper()
	ln := testkit.Must(net.Listen("tcp", "127.0.0.1:0"))(t)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", target())
				if err != nil {
					return
				}
				defer s.Close()
				time.Sleep(delay)
				go func() { _, _ = io.Copy(s, c); s.Close() }()
				_, _ = io.Copy(c, s)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestSlowConnectIsUp: a server that answers every ping and statement, but takes longer
// than a probe's Timeout to accept a new connection (reverse DNS, TLS, a busy server
// starting a thread for it), though well within the driver's own connect timeout, is up:
// the pool connects to it and its statements run. The probe connects again after any
// ping that failed (one slow ping of a busy server is enough), so a probe that must
// connect within Timeout took such a server for down after its first two probes,
// cutting every statement in flight and refusing every new one, and kept it down as long
// as connecting stayed slower than Timeout.
func TestSlowConnectIsUp(t *testing.T) {
	cfg := testkit.Must(mysql.ParseDSN(testenv.MySQLDSN(t)))(t)
	addr := cfg.Addr
	cfg.Addr = proxy(t, func() string { return addr }, 300*time.Millisecond)
	cfg.Timeout = 10 * time.Second // the driver's connect timeout: connecting takes 300 ms
	var changes []bool
	w := testkit.Must(mysqlwatch.New(cfg, mysqlwatch.Options{Timeout: 100 * time.Millisecond,
		Log: slog.New(slog.DiscardHandler), OnChange: func(up bool) { changes = append(changes, up) }}))(t)
	db := sql.OpenDB(testkit.Must(w.Connector())(t))
	defer db.Close()
	var p mysqlwatch.Prober
	for range 3 {
		w.Step(t.Context(), &p)
	}
	assert.True(t, w.Up())
	assert.Empty(t, changes)
	var one int
	require.NoError(t, db.QueryRowContext(t.Context(), "SELECT 1").Scan(&one))
	assert.Equal(t, 1, one)
}

// TestProbeFollowsAFailover: the probe renews its connection (MaxConnAge, here at every
// probe) like a pool, so after a failover behind the same address it probes the server
// the pool now connects to. The old server goes on answering and the new one hangs: the
// watch finds the server down. (A probe that kept its first connection would ping the
// old server, and take the hung one for up for as long as the old one answered.)
func TestProbeFollowsAFailover(t *testing.T) {
	oldCfg := testkit.Must(mysql.ParseDSN(testenv.MySQLDSN(t)))(t)
	own, newDSN := testenv.OwnMySQL(t)
	newCfg := testkit.Must(mysql.ParseDSN(newDSN))(t)
	var target atomic.Pointer[string]
	target.Store(&oldCfg.Addr)
	cfg := oldCfg.Clone()
	cfg.Addr = proxy(t, func() string { return *target.Load() }, 0)
	w := testkit.Must(mysqlwatch.New(cfg, mysqlwatch.Options{Timeout: 200 * time.Millisecond, MaxConnAge: time.Nanosecond,
		Log: slog.New(slog.DiscardHandler)}))(t)
	var p mysqlwatch.Prober
	w.Step(t.Context(), &p)
	require.True(t, w.Up(), "the old server answers")

	target.Store(&newCfg.Addr) // the failover
	own.Pause(t)               // and the new server hangs
	t.Cleanup(func() { own.Unpause(t) })
	for range 2 {
		w.Step(t.Context(), &p)
	}
	assert.False(t, w.Up())
}

// writeProbe is the tests' write probe, refserver's: a DELETE of a row of writeProbeTable
// that never exists.
const (
	writeProbeTable = "CREATE TABLE write_probe (id INT PRIMARY KEY)"
	writeProbe      = "DELETE FROM write_probe WHERE id = 0"
)

// probingWrites starts a Watch of dsn's server with the write probe (its table created
// first) and returns it, a pool through it, and the changes of writes' state so far.
func probingWrites(t *testing.T, dsn string) (*mysqlwatch.Watch, *sql.DB, func() []bool) {
	t.Helper()
	setup := testkit.Must(sql.Open("mysql", dsn))(t)
	defer setup.Close()
	_, err := setup.ExecContext(t.Context(), writeProbeTable)
	require.NoError(t, err)
	var (
		mu      sync.Mutex
		changes []bool
	)
	w := testkit.Must(mysqlwatch.New(testkit.Must(mysql.ParseDSN(dsn))(t), mysqlwatch.Options{
		Log: slog.New(slog.DiscardHandler), WriteProbe: writeProbe,
		OnWritable: func(ok bool) { mu.Lock(); changes = append(changes, ok); mu.Unlock() }}))(t)
	db := sql.OpenDB(testkit.Must(w.Connector())(t))
	t.Cleanup(func() { db.Close() })
	testkit.Background(t, w.Run)
	return w, db, func() []bool { mu.Lock(); defer mu.Unlock(); return slices.Clone(changes) }
}

// blockedBy checks that err is Writable's refusal for the server's answer number: a
// dependency failure with a retry hint, carrying that answer.
func blockedBy(t *testing.T, err error, number uint16) {
	t.Helper()
	require.ErrorIs(t, err, mysqlwatch.ErrWritesBlocked)
	assert.ErrorIs(t, err, errcode.ErrUnavailable)
	assert.Equal(t, time.Second, errcode.RetryAfter(err, 0))
	var me *mysql.MySQLError
	if assert.ErrorAs(t, err, &me) {
		assert.Equal(t, number, me.Number, "%v", err)
	}
}

// TestGlobalReadLockBlocksWrites: while a global read lock is held (as backup tools take
// it) the server answers pings and reads but holds every write; the write probe's lock
// wait ends with a lock wait timeout, and Writable refuses writes (the server stays up,
// its pool usable for reads) until the lock is released.
func TestGlobalReadLockBlocksWrites(t *testing.T) {
	_, dsn := testenv.OwnMySQL(t)
	w, db, changes := probingWrites(t, dsn)
	ctx := t.Context()
	require.NoError(t, w.Writable())
	lock := testkit.Must(db.Conn(ctx))(t)
	_, err := lock.ExecContext(ctx, "FLUSH TABLES WITH READ LOCK")
	require.NoError(t, err)

	require.Eventually(t, func() bool { return w.Writable() != nil }, time.Minute, 20*time.Millisecond)
	blockedBy(t, w.Writable(), 1205)
	assert.True(t, w.Up())
	var n int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*) FROM write_probe").Scan(&n), "reads go on")

	_, err = lock.ExecContext(ctx, "UNLOCK TABLES")
	require.NoError(t, err)
	require.NoError(t, lock.Close())
	require.Eventually(t, func() bool { return w.Writable() == nil }, time.Minute, 20*time.Millisecond)
	assert.Equal(t, []bool{false, true}, changes())
}

// TestPausedServerIsDownNotWriteBlocked: a server paused while the watch probes its writes
// (mid-probe, or between probes) answers neither ping nor write: it is down, its
// connections refused, and no verdict on writes is taken from the silence; unpaused, it
// is up and takes writes, writes never having been taken for blocked.
func TestPausedServerIsDownNotWriteBlocked(t *testing.T) {
	own, dsn := testenv.OwnMySQL(t)
	w, db, changes := probingWrites(t, dsn)
	ctx := t.Context()
	require.NoError(t, db.PingContext(ctx))

	own.Pause(t)
	require.Eventually(t, func() bool { return !w.Up() }, time.Minute, 20*time.Millisecond)
	_, err := db.ExecContext(ctx, writeProbe)
	refused(t, err)
	assert.NoError(t, w.Writable(), "silence is no verdict on writes")

	own.Unpause(t)
	require.Eventually(t, w.Up, time.Minute, 20*time.Millisecond)
	_, err = db.ExecContext(ctx, writeProbe)
	require.NoError(t, err)
	assert.NoError(t, w.Writable())
	assert.Empty(t, changes())
}

// TestReadOnlyServerBlocksWrites: a server switched to read_only (a replica promoted
// late, a failover in progress) refuses the write probe of a user without the right to
// write through it, and Writable refuses writes until it is writable again.
func TestReadOnlyServerBlocksWrites(t *testing.T) {
	_, rootDSN := testenv.OwnMySQL(t)
	root := testkit.Must(sql.Open("mysql", rootDSN))(t)
	defer root.Close()
	ctx := t.Context()
	cfg := testkit.Must(mysql.ParseDSN(rootDSN))(t)
	for _, q := range []string{"CREATE USER app IDENTIFIED BY 'app'", "GRANT ALL ON `" + cfg.DBName + "`.* TO app"} {
		_, err := root.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	cfg.User, cfg.Passwd = "app", "app"
	w, _, changes := probingWrites(t, cfg.FormatDSN())

	_, err := root.ExecContext(ctx, "SET GLOBAL read_only = 1")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return w.Writable() != nil }, time.Minute, 20*time.Millisecond)
	blockedBy(t, w.Writable(), 1290)

	_, err = root.ExecContext(ctx, "SET GLOBAL read_only = 0")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return w.Writable() == nil }, time.Minute, 20*time.Millisecond)
	assert.Equal(t, []bool{false, true}, changes())
}

// TestWriteProbeErrorIsNoVerdict: a write probe the server answers with an error that says
// nothing about writes (here: its table is missing) leaves writes taken.
func TestWriteProbeErrorIsNoVerdict(t *testing.T) {
	dsn := testenv.MySQLDSN(t)
	var changes []bool
	w := testkit.Must(mysqlwatch.New(testkit.Must(mysql.ParseDSN(dsn))(t), mysqlwatch.Options{
		Log: slog.New(slog.DiscardHandler), WriteProbe: writeProbe,
		OnWritable: func(ok bool) { changes = append(changes, ok) }}))(t)
	var p mysqlwatch.Prober
	for range 3 {
		w.Step(t.Context(), &p)
	}
	assert.True(t, w.Up())
	assert.NoError(t, w.Writable())
	assert.Empty(t, changes)
}

// appServer starts a MySQL server of the test's own with a user app (password app, no
// right to write through read_only) owning its database, where the write probe's table
// exists, and returns a DSN of app's and a root connection pool.
func appServer(t *testing.T) (string, *sql.DB) {
	t.Helper()
	_, rootDSN := testenv.OwnMySQL(t)
	root := testkit.Must(sql.Open("mysql", rootDSN))(t)
	t.Cleanup(func() { root.Close() })
	cfg := testkit.Must(mysql.ParseDSN(rootDSN))(t)
	for _, q := range []string{"CREATE USER app IDENTIFIED BY 'app'", "GRANT ALL ON `" + cfg.DBName + "`.* TO app",
		"CREATE TABLE `" + cfg.DBName + "`.write_probe (id INT PRIMARY KEY)"} {
		_, err := root.ExecContext(t.Context(), q)
		require.NoError(t, err, q)
	}
	cfg.User, cfg.Passwd = "app", "app"
	return cfg.FormatDSN(), root
}

// TestReadOnlyVerdictFollowsAFailover: after a switchover behind one address (a proxy, a
// DNS name, a VIP), the old primary, demoted to a read_only replica, goes on answering the
// connections made to it before; the new one takes writes. The watch, which found writes
// refused by the old one, must ask the server the address now names, as the pool's new
// connections do, rather than go on refusing every write for as long as its connection
// lives (MaxConnAge: refserver's is 5 minutes; zero is for ever). Here the probe's
// connection would live an hour: after the switch, the watch kept refusing writes that a
// new connection through the same address took.
func TestReadOnlyVerdictFollowsAFailover(t *testing.T) {
	ctx := t.Context()
	oldDSN, oldRoot := appServer(t)
	newDSN, _ := appServer(t)
	oldCfg, newCfg := testkit.Must(mysql.ParseDSN(oldDSN))(t), testkit.Must(mysql.ParseDSN(newDSN))(t)
	var target atomic.Pointer[string]
	target.Store(&oldCfg.Addr)
	cfg := oldCfg.Clone()
	cfg.Addr = proxy(t, func() string { return *target.Load() }, 0)
	w := testkit.Must(mysqlwatch.New(cfg, mysqlwatch.Options{MaxConnAge: time.Hour, WriteProbe: writeProbe,
		Log: slog.New(slog.DiscardHandler)}))(t)
	var p mysqlwatch.Prober
	t.Cleanup(func() { p.Close() })
	w.Step(ctx, &p)
	require.NoError(t, w.Writable(), "the old primary takes writes")

	_, err := oldRoot.ExecContext(ctx, "SET GLOBAL read_only = 1") // the switchover: the old primary demoted
	require.NoError(t, err)
	w.Step(ctx, &p)
	blockedBy(t, w.Writable(), 1290)
	target.Store(&newCfg.Addr) // and the address names the new one

	db := sql.OpenDB(testkit.Must(w.Connector())(t))
	defer db.Close()
	_, err = db.ExecContext(ctx, writeProbe)
	require.NoError(t, err, "a new connection writes")
	for range 3 {
		w.Step(ctx, &p)
	}
	assert.NoError(t, w.Writable(), "writes refused after the switchover")
	assert.True(t, w.Up())
}
