package server

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
)

// TestMySQLLockWaitEndsOnTheServer: a statement of refserver's MySQL pool waiting for a
// row lock is ended by the server (lock wait timeout 1205, which sqlutil.InTx retries and
// refserver answers 503 contention) before the client's read timeout. Otherwise the
// client gives up first ("invalid connection", 503 dependency_unavailable for a database
// that is fine) and its transaction lives on in the server, still holding the locks it
// took and still waiting, until the server's own lock wait timeout (50 s by default),
// stalling every request that needs those rows.
func TestMySQLLockWaitEndsOnTheServer(t *testing.T) {
	cfg := Defaults()
	cfg.DBDriver, cfg.DBDSN = DriverMySQL, testenv.MySQLDSN(t)
	db, err := openDB(cfg)
	require.NoError(t, err)
	defer db.Close()
	ctx := t.Context()
	_, err = db.ExecContext(ctx, "CREATE TABLE lockwait_rows (id INT PRIMARY KEY)")
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "INSERT INTO lockwait_rows VALUES (1), (2)")
	require.NoError(t, err)

	holder, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback() }()
	_, err = holder.ExecContext(ctx, "SELECT id FROM lockwait_rows WHERE id = 1 FOR UPDATE")
	require.NoError(t, err)

	waiter, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	var id int64
	require.NoError(t, waiter.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id))
	_, err = waiter.ExecContext(ctx, "SELECT id FROM lockwait_rows WHERE id = 2 FOR UPDATE")
	require.NoError(t, err)
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
