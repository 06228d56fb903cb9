package sqlidempotency_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/payment/idempotency/sqlidempotency"
)

// TestClaimDoesNotWaitABusySQLiteAgain is TestClaimDoesNotWaitALockAgain on a SQLite file
// with a busy timeout (refserver's pragmas, scaled down), another connection holding its
// write lock: the claim's insert waits the whole busy timeout before SQLITE_BUSY, which is
// no lost race to decide again (16 rounds, 16 busy timeouts), but fails at once with that
// error, matching IsRetryable, for the client to retry later. Nothing is stored.
func TestClaimDoesNotWaitABusySQLiteAgain(t *testing.T) {
	ctx := context.Background()
	db, other := testenv.SQLiteFileTwice(t, 200*time.Millisecond)
	require.NoError(t, sqlidempotency.CreateSchema(ctx, db))
	_, err := other.ExecContext(ctx, "CREATE TABLE writer (id INTEGER PRIMARY KEY)")
	require.NoError(t, err)
	holder, err := other.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = holder.ExecContext(ctx, "INSERT INTO writer VALUES (1)")
	require.NoError(t, err)

	s, err := idempotency.New(sqlidempotency.New(db))
	require.NoError(t, err)
	_, err = s.Claim(ctx, "s", "k", "fp")
	require.Error(t, err)
	assert.True(t, sqlutil.IsRetryable(err), "%v", err)
	require.NoError(t, holder.Rollback())
	var n int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+sqlidempotency.Table).Scan(&n))
	assert.Zero(t, n)
}
