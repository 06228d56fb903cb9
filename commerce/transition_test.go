package commerce

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
)

// TestTransitionLocksOneRow: an order's transition locks its own row and nothing around
// it, so orders placed or paid meanwhile do not queue behind it. With a few hundred orders
// whose statistics are up to date (as in a flash sale), InnoDB's optimizer read the row
// through commerce_orders_step unless told otherwise, gap-locking the entries beside it.
func TestTransitionLocksOneRow(t *testing.T) {
	ctx := context.Background()
	db := testenv.MySQL(t)
	require.NoError(t, CreateSchema(ctx, db))
	order := func(n int) *orderRow {
		return &orderRow{ID: fmt.Sprintf("ord_%06d", n), UserID: "user", IdemKey: fmt.Sprint(n), Status: StatusPendingPayment,
			Stock: stockReserved}
	}
	rows := make([]*orderRow, 400)
	for i := range rows {
		rows[i] = order(2 * (i + 1)) // even numbers: odd ones fall between two orders
	}
	_, err := db.NewInsert().Model(&rows).Exec(ctx)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "ANALYZE TABLE commerce_orders")
	require.NoError(t, err)

	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	moved, err := transition(ctx, tx, order(4).ID, StatusPendingPayment, "", time.Now(),
		map[string]any{"status": StatusPaying, "step": stepPay})
	require.NoError(t, err)
	require.True(t, moved)

	// Another connection places order 5, beside order 4 in every index, while the
	// transition's transaction is open.
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "SET SESSION innodb_lock_wait_timeout = 1")
	require.NoError(t, err)
	_, err = conn.NewInsert().Model(order(5)).Exec(ctx)
	require.NoError(t, err, "a new order waited for another order's transition")
	require.NoError(t, tx.Commit())
}
