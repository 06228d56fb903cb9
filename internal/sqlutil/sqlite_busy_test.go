package sqlutil_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
)

// TestInTxDoesNotWaitABusySQLiteAgain: on SQLite with a busy timeout (refserver sets 10 s),
// a statement that finds the file locked by another connection (another process's write
// transaction) waits the whole timeout before it fails with SQLITE_BUSY, as a MySQL
// statement waits the whole lock wait before 1205: InTx runs it once, not DefaultAttempts
// times (8 busy timeouts: 80 s with refserver's, past its 30-s request timeout, its one
// connection held all along). Without a busy timeout SQLITE_BUSY comes at once, and InTx
// still runs the transaction again. Either way the failure matches IsRetryable and
// changes nothing.
func TestInTxDoesNotWaitABusySQLiteAgain(t *testing.T) {
	for _, tc := range []struct{ timeoutMS, attempts int }{{300, 1}, {0, sqlutil.DefaultAttempts}} {
		t.Run(fmt.Sprintf("busy_timeout=%d", tc.timeoutMS), func(t *testing.T) {
			ctx := context.Background()
			db, other := testenv.SQLiteFileTwice(t, time.Duration(tc.timeoutMS)*time.Millisecond)
			_, err := db.ExecContext(ctx, "CREATE TABLE busy (id INTEGER PRIMARY KEY)")
			require.NoError(t, err)
			holder, err := other.BeginTx(ctx, nil)
			require.NoError(t, err)
			_, err = holder.ExecContext(ctx, "INSERT INTO busy VALUES (1)")
			require.NoError(t, err)

			attempts := 0
			err = sqlutil.InTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
				attempts++
				_, err := tx.ExecContext(ctx, "INSERT INTO busy VALUES (2)")
				return err
			})
			require.Error(t, err)
			assert.True(t, sqlutil.IsRetryable(err), "%v", err)
			assert.Equal(t, tc.attempts, attempts)
			require.NoError(t, holder.Rollback())
			var n int
			require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*) FROM busy").Scan(&n))
			assert.Zero(t, n)
		})
	}
}

// TestIsRetryableTrustsTheDriverNotTheText: an error that only says what a busy SQLite
// says (a handler's error quoting its input, a product named "database is locked") is no
// lock conflict. Matched on its text, it was retried as one for ever: a Kafka consumer
// returned it at every delivery instead of dead-lettering its event, holding the
// partition (found by a session attacking the consumers).
func TestIsRetryableTrustsTheDriverNotTheText(t *testing.T) {
	for _, msg := range []string{"the metrics of database is locked overflow int64", "database table is locked",
		"disk I/O error (SQLITE_BUSY)", "(SQLITE_BUSY)"} {
		err := fmt.Errorf("collector: event e1: %w", errors.New(msg))
		assert.False(t, sqlutil.IsRetryable(err), msg)
	}
}
