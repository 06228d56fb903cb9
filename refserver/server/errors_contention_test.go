package server

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
	_, err := db.ExecContext(ctx, "CREATE TABLE contention_rows (id INT PRIMARY KEY)")
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "INSERT INTO contention_rows VALUES (1), (2)")
	require.NoError(t, err)

	// Two transactions on their own connections, each holding one row.
	a, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = a.Rollback() }()
	b, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = b.Rollback() }()
	_, err = a.ExecContext(ctx, "SELECT id FROM contention_rows WHERE id = 1 FOR UPDATE")
	require.NoError(t, err)
	_, err = b.ExecContext(ctx, "SELECT id FROM contention_rows WHERE id = 2 FOR UPDATE")
	require.NoError(t, err)

	// b waits for row 1 (held by a) and times out after 1 s: 1205.
	_, err = b.ExecContext(ctx, "SET SESSION innodb_lock_wait_timeout = 1")
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
