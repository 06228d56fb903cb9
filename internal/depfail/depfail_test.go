package depfail_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// requireUnavailable checks that err, a real error of a real client, is classified as a
// dependency failure, and that Wrap keeps what it matched.
func requireUnavailable(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	assert.True(t, depfail.Is(err), "%T: %v", err, err)
	wrapped := depfail.Wrap("dep", err)
	assert.ErrorIs(t, wrapped, errcode.ErrUnavailable)
	assert.ErrorIs(t, wrapped, err, "the original error still matches")
	var u *errcode.UnavailableError
	require.ErrorAs(t, wrapped, &u)
	assert.Equal(t, "dep", u.Dependency)
}

// TestRefused: connecting to a port nobody listens on, with go-redis and with the MySQL
// driver through database/sql.
func TestRefused(t *testing.T) {
	addr := closedPort(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	requireUnavailable(t, rdb.Ping(t.Context()).Err())

	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User = "tcp", addr, "root"
	db, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	defer db.Close()
	requireUnavailable(t, db.PingContext(t.Context()))
}

// TestRedisPaused: a Redis that stops answering (its container paused) gives i/o timeouts,
// and a pool whose connections all wait on it gives pool timeouts.
func TestRedisPaused(t *testing.T) {
	own := testenv.OwnRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: own.Addr, ReadTimeout: 200 * time.Millisecond,
		PoolSize: 1, PoolTimeout: 100 * time.Millisecond, MaxRetries: -1})
	defer rdb.Close()
	ctx := t.Context()
	require.NoError(t, rdb.Set(ctx, "k", "v", 0).Err())
	own.Pause(t) // the fixture unpauses it at the end should the test fail first

	busy := make(chan error, 1)
	go func() { busy <- rdb.Get(ctx, "k").Err() }() // holds the only connection
	time.Sleep(20 * time.Millisecond)
	poolErr := rdb.Get(ctx, "k").Err()
	require.ErrorIs(t, poolErr, redis.ErrPoolTimeout)
	requireUnavailable(t, poolErr)
	timeoutErr := <-busy
	var ne net.Error
	require.ErrorAs(t, timeoutErr, &ne)
	assert.True(t, ne.Timeout(), "%v", timeoutErr)
	requireUnavailable(t, timeoutErr)

	own.Unpause(t)
	require.NoError(t, rdb.Set(ctx, "k", "v2", 0).Err(), "the client recovers by itself")
}

// TestMySQLConnectionKilled: a connection the server kills mid-session ("invalid
// connection" or a closed socket on the next statement in a transaction).
func TestMySQLConnectionKilled(t *testing.T) {
	db := testenv.MySQL(t)
	ctx := t.Context()
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	var id int64
	require.NoError(t, tx.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id))
	_, err = db.ExecContext(ctx, fmt.Sprintf("KILL %d", id))
	require.NoError(t, err)
	_, err = tx.ExecContext(ctx, "SELECT 1")
	requireUnavailable(t, err)
}

// TestMySQLReadOnly: a write to a server switched to read-only (a replica promoted late, a
// failover in progress) is a dependency failure, not a bad request. The server's answers are
// built here because switching a shared server to read-only would break every other test
// (and the server of COMMERCEKIT_MYSQL_DSN is the user's).
func TestMySQLReadOnly(t *testing.T) {
	for _, n := range []uint16{1290, 1836} {
		err := fmt.Errorf("inserting: %w", &mysql.MySQLError{Number: n, Message: "The MariaDB server is running with the --read-only option so it cannot execute this statement"})
		requireUnavailable(t, err)
	}
}

// TestMySQLOutOfResources: a table the server cannot grow ("the table is full", error
// 1114, as a full disk makes it: refserver's TestAttackMySQLDiskFull) and a statement the
// server ends at its time limit (MariaDB's max_statement_time, 1969) are dependency
// failures: the request was fine, the server could not serve it then. Both are the
// server's own answers here: a MEMORY table at its size limit, a statement over its limit.
func TestMySQLOutOfResources(t *testing.T) {
	ctx := t.Context()
	db := testenv.MySQL(t)
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "SET SESSION max_heap_table_size = 16384")
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, "CREATE TABLE full_heap (v VARCHAR(255)) ENGINE=MEMORY")
	require.NoError(t, err)
	var full error
	for i := 0; full == nil && i < 10_000; i++ {
		_, full = conn.ExecContext(ctx, "INSERT INTO full_heap VALUES (REPEAT('x', 255))")
	}
	var me *mysql.MySQLError
	require.ErrorAs(t, full, &me)
	assert.EqualValues(t, 1114, me.Number, "%v", full)
	requireUnavailable(t, full)

	_, slow := conn.ExecContext(ctx, "SET STATEMENT max_statement_time = 0.01 FOR SELECT SLEEP(1)")
	if slow == nil { // MySQL: no max_statement_time; a SELECT's own limit
		_, slow = conn.ExecContext(ctx, "SELECT /*+ MAX_EXECUTION_TIME(10) */ SLEEP(1) FROM DUAL")
	}
	require.ErrorAs(t, slow, &me)
	assert.Contains(t, []uint16{1969, 3024}, me.Number, "%v", slow)
	requireUnavailable(t, slow)
}

// TestNotDependencyFailures: answers that say something about the request, and the
// caller's own context ending, are not dependency failures.
func TestNotDependencyFailures(t *testing.T) {
	ctx := t.Context()
	db := testenv.MySQL(t)
	_, err := db.ExecContext(ctx, "CREATE TABLE t (id INT PRIMARY KEY)")
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	_, dup := db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	_, syntax := db.ExecContext(ctx, "SELEKT 1")
	noRows := db.QueryRowContext(ctx, "SELECT id FROM t WHERE id = 2").Scan(new(int))

	rdb := testenv.Redis(t)
	missing := rdb.Get(ctx, "absent").Err()
	require.NoError(t, rdb.Set(ctx, "s", "v", 0).Err())
	wrongType := rdb.HGet(ctx, "s", "f").Err()

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	canceledErr := rdb.Get(cancelled, "s").Err()
	expired, cancel2 := context.WithTimeout(ctx, -time.Second)
	defer cancel2()
	_, deadlineErr := db.ExecContext(expired, "SELECT 1")

	for name, err := range map[string]error{"duplicate key": dup, "syntax": syntax, "no rows": noRows,
		"redis nil": missing, "wrong type": wrongType, "canceled": canceledErr, "deadline": deadlineErr,
		"plain": errors.New("boom"), "nil": nil} {
		assert.False(t, depfail.Is(err), "%s: %v", name, err)
		assert.Equal(t, err, depfail.Wrap("dep", err), name)
	}
}

// TestMySQLBadConnectionNoWrite: go-sql-driver answers a statement it could not send at all
// (the socket failed before a byte was written) with an unexported error whose text is "bad
// connection". Its queries turn it into driver.ErrBadConn, but Tx.Commit and Tx.Rollback
// return it as it is (transaction.go sends COMMIT and ROLLBACK without markBadConn): a
// session's COMMIT after MySQL restarted answered 500 in refserver's
// TestAttackFlowsSurviveRestarts. It cannot be made on demand, so it is matched by its text
// here; driver.ErrBadConn ("driver: bad connection") is matched as before.
func TestMySQLBadConnectionNoWrite(t *testing.T) {
	noWrite := errors.New("bad connection") // the driver's errBadConnNoWrite, errors.go
	for _, err := range []error{noWrite, fmt.Errorf("member: open a session: %w", noWrite)} {
		requireUnavailable(t, err)
	}
	assert.False(t, depfail.Is(errors.New("a bad connection string")), "only the driver's own text")
}

// TestCanceledDial: a caller that gives up while a connection is being dialled (a client
// that went away while the pools reconnect after a restart) gets a *net.OpError from the
// dialer that wraps context.Canceled. That is the caller's own context ending, not a
// dependency failure: it must not be counted and answered as dependency_unavailable.
func TestCanceledDial(t *testing.T) {
	addr := testenv.Redis(t).Options().Addr // a server that answers: only the cancellation fails the dial
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	var op *net.OpError
	require.ErrorAs(t, err, &op)
	require.ErrorIs(t, err, context.Canceled)
	assert.False(t, depfail.Is(err), "%v", err)
	assert.Equal(t, err, depfail.Wrap("dep", err))
}

// TestRedisRefuses: a Redis that refuses commands for a while — out of memory under
// noeviction, busy with a long script, or refusing writes because its last snapshot failed —
// is a dependency failure, not a bad request. The first two are brought about for real on
// the test's own Redis.
func TestRedisRefuses(t *testing.T) {
	own := testenv.OwnRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: own.Addr, MaxRetries: -1})
	defer rdb.Close()
	ctx := t.Context()
	write := redis.NewScript(`return redis.call('SET', KEYS[1], ARGV[1])`)

	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "1").Err())
	oom := rdb.Set(ctx, "k", "v", 0).Err()
	require.ErrorContains(t, oom, "OOM ")
	requireUnavailable(t, oom)
	requireUnavailable(t, write.Run(ctx, rdb, []string{"k"}, "v").Err())
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "0").Err())

	// A read-only script that runs for 500 ms, past a busy threshold of 50 ms.
	require.NoError(t, rdb.ConfigSet(ctx, "busy-reply-threshold", "50").Err())
	long := make(chan error, 1)
	go func() {
		long <- rdb.Eval(ctx, `local t = redis.call('TIME')
local stop = t[1] * 1000000 + t[2] + 500000
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop
return 1`, nil).Err()
	}()
	var busy error
	require.Eventually(t, func() bool {
		busy = rdb.Get(ctx, "k").Err()
		return busy != nil && busy != redis.Nil
	}, 400*time.Millisecond, 20*time.Millisecond)
	require.ErrorContains(t, busy, "BUSY ")
	requireUnavailable(t, busy)
	require.NoError(t, <-long)

	// Writes stopped after a failed snapshot: the reply is sent by a script here, because
	// making a snapshot fail needs a protected setting (dir) that Redis 7 refuses to change.
	misconf := rdb.Eval(ctx, `return redis.error_reply('MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk.')`, nil).Err()
	require.ErrorContains(t, misconf, "MISCONF ")
	requireUnavailable(t, misconf)
}
