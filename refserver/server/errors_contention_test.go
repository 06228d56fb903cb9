package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
)

// TestContentionIs503: a MariaDB lock wait timeout (1205) or deadlock (1213) that
// outlived sqlutil.InTx's retries is contention, not a bug and not a business answer: it
// is answered 503 contention with Retry-After, never 500 internal. The errors are real
// ones from MariaDB.
func TestContentionIs503(t *testing.T) {
	db := testenv.MySQL(t)
	ctx := t.Context()
	createRows(t, db, "contention_rows")

	// Two transactions on their own connections, each holding one row.
	a := lockRow(t, db, "contention_rows", 1)
	b := lockRow(t, db, "contention_rows", 2)

	// b waits for row 1 (held by a) and times out after 1 s: 1205.
	_, err := b.ExecContext(ctx, "SET SESSION innodb_lock_wait_timeout = 1")
	require.NoError(t, err)
	_, lockWait := b.ExecContext(ctx, "SELECT id FROM contention_rows WHERE id = 1 FOR UPDATE")
	require.Error(t, lockWait)
	require.True(t, sqlutil.IsRetryable(lockWait), "%v", lockWait)

	// b waits for row 1 again while a asks for row 2: MariaDB rolls one of them back (1213).
	waited := make(chan error, 1)
	go func() {
		_, err := b.ExecContext(ctx, "SELECT id FROM contention_rows WHERE id = 1 FOR UPDATE")
		waited <- err
	}()
	time.Sleep(200 * time.Millisecond) // b is waiting
	_, errA := a.ExecContext(ctx, "SELECT id FROM contention_rows WHERE id = 2 FOR UPDATE")
	errB := <-waited
	require.True(t, (errA == nil) != (errB == nil), "exactly one victim: a %v, b %v", errA, errB)
	deadlock := errA
	if deadlock == nil {
		deadlock = errB
	}
	require.True(t, sqlutil.IsRetryable(deadlock), "%v", deadlock)

	s := testServer()
	for name, err := range map[string]error{"lock wait timeout": lockWait, "deadlock": deadlock} {
		t.Run(name, func(t *testing.T) {
			p := s.problemFor(fmt.Errorf("commerce: placing the order: %w", err))
			assert.Equal(t, http.StatusServiceUnavailable, p.Status, "%v", err)
			assert.Equal(t, "contention", p.Code)
			assert.Equal(t, 1, p.RetryAfter)
		})
	}
}

// TestMySQLLockWaitEndsOnTheServer: a statement of refserver's MySQL pool waiting for a
// row lock is ended by the server (lock wait timeout 1205, which refserver answers 503
// contention) before the client's read timeout. Otherwise the
// client gives up first ("invalid connection", 503 dependency_unavailable for a database
// that is fine) and its transaction lives on in the server, still holding the locks it
// took and still waiting, until the server's own lock wait timeout (50 s by default),
// stalling every request that needs those rows.
func TestMySQLLockWaitEndsOnTheServer(t *testing.T) {
	cfg := Defaults()
	cfg.DBDriver, cfg.DBDSN = DriverMySQL, testenv.MySQLDSN(t)
	db, _, err := openDB(cfg, slog.Default(), nil, false)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() }) // after the transactions lockRow rolls back
	ctx := t.Context()
	createRows(t, db, "lockwait_rows")
	lockRow(t, db, "lockwait_rows", 1) // the holder
	waiter := lockRow(t, db, "lockwait_rows", 2)
	var id int64
	require.NoError(t, waiter.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id))
	start := time.Now()
	_, err = waiter.ExecContext(ctx, "SELECT id FROM lockwait_rows WHERE id = 1 FOR UPDATE")
	took := time.Since(start)
	require.Error(t, err)
	assert.True(t, sqlutil.IsRetryable(err), "the server ended the wait (1205), not the client: %v after %v", err, took)
	assert.Less(t, took, mysqlIOTimeout)
	assert.NoError(t, waiter.Rollback(), "the connection is still sound")

	var trx int
	require.NoError(t, db.QueryRowContext(context.Background(),
		"SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ?", id).Scan(&trx))
	assert.Zero(t, trx, "nothing of the waiter's transaction is left on the server")
}

// createRows creates table with the rows 1 and 2, for transactions to lock.
func createRows(t *testing.T, db *bun.DB, table string) {
	t.Helper()
	_, err := db.ExecContext(t.Context(), "CREATE TABLE "+table+" (id INT PRIMARY KEY)")
	require.NoError(t, err)
	_, err = db.ExecContext(t.Context(), "INSERT INTO "+table+" VALUES (1), (2)")
	require.NoError(t, err)
}

// lockRow begins a transaction that locks row id of table (SELECT ... FOR UPDATE); it is
// rolled back when the test ends.
func lockRow(t *testing.T, db *bun.DB, table string, id int) bun.Tx {
	t.Helper()
	tx, err := db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback() })
	_, err = tx.ExecContext(t.Context(), "SELECT id FROM "+table+" WHERE id = ? FOR UPDATE", id)
	require.NoError(t, err)
	return tx
}

// TestMySQLMetadataLockWaitEndsOnTheServer: a statement of refserver's MySQL pool waiting
// for a table's metadata lock (held by a LOCK TABLES here; by an ALTER TABLE of a
// migration in production) is ended by the server (1205, answered 503 contention) before
// the client's read timeout, like a row lock wait. Otherwise the client gives up first and
// the server's thread waits on (lock_wait_timeout is a day by default), to run the
// statement once the lock is released, with its client long gone. The wait is a second,
// not the row lock's five: a table's lock is held against every request on the table.
func TestMySQLMetadataLockWaitEndsOnTheServer(t *testing.T) {
	cfg := Defaults()
	cfg.DBDriver, cfg.DBDSN = DriverMySQL, testenv.MySQLDSN(t)
	db, _, err := openDB(cfg, slog.Default(), nil, false)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	ctx := t.Context()
	var rowWait, tableWait int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT @@SESSION.innodb_lock_wait_timeout, @@SESSION.lock_wait_timeout").
		Scan(&rowWait, &tableWait))
	assert.Equal(t, 5, rowWait, "a row lock: contention between requests")
	assert.Equal(t, 1, tableWait, "a table's lock: held against every request on it")
	createRows(t, db, "mdl_rows")
	holder, err := db.Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = holder.ExecContext(context.Background(), "UNLOCK TABLES"); _ = holder.Close() })
	_, err = holder.ExecContext(ctx, "LOCK TABLES mdl_rows WRITE")
	require.NoError(t, err)

	_, err = db.ExecContext(ctx, "SELECT id FROM mdl_rows WHERE id = 1")
	require.Error(t, err)
	assert.True(t, sqlutil.IsRetryable(err), "the server ended the wait (1205), not the client: %v", err)
	// The check is on the thread's wait state, not on its statement text alone: the server
	// sends the error before it clears the text, so a thread done waiting may show it a
	// moment longer (CI saw this once).
	var waiting int
	require.NoError(t, holder.QueryRowContext(ctx,
		"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT id FROM mdl_rows%' "+
			"AND STATE LIKE 'Waiting for table metadata lock%'").Scan(&waiting))
	assert.Zero(t, waiting, "no thread of the server still waits to run the statement")
}

// TestStartUpMigrationMeetingAHeldTableFails: a start-up whose migration meets a table held
// by another session (a LOCK TABLES here; a long ALTER TABLE of another version's start-up
// in production) fails with the server's lock wait timeout, a retryable error, and leaves no
// statement of its waiting on the server. It does not queue behind the lock for the server's
// default lock_wait_timeout (a day), holding up every statement on that table behind it; the
// process exits and is started again.
func TestStartUpMigrationMeetingAHeldTableFails(t *testing.T) {
	cfg := Defaults()
	cfg.DBDriver, cfg.DBDSN = DriverMySQL, testenv.MySQLDSN(t)
	ctx := t.Context()
	first, err := buildStack(ctx, cfg, slog.Default(), newMetrics(func(error) string { return "" }))
	require.NoError(t, err, "the first start creates every table")
	first.close(slog.Default())

	db, _, err := openDB(cfg, slog.Default(), nil, false)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	holder, err := db.Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = holder.ExecContext(context.Background(), "UNLOCK TABLES"); _ = holder.Close() })
	_, err = holder.ExecContext(ctx, "LOCK TABLES commerce_orders WRITE")
	require.NoError(t, err)

	st, err := buildStack(ctx, cfg, slog.Default(), newMetrics(func(error) string { return "" }))
	if err == nil {
		st.close(slog.Default())
	}
	require.Error(t, err, "a start-up whose migration cannot take the commerce_orders table fails")
	assert.True(t, sqlutil.IsRetryable(err), "the server ended the wait (1205): %v", err)
	var waiting int
	require.NoError(t, holder.QueryRowContext(ctx,
		"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE LIKE 'Waiting for table metadata lock%'").Scan(&waiting))
	assert.Zero(t, waiting, "no statement of the failed start-up still waits on the server")
}
