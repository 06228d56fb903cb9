package commerce

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
)

// TestTransitionLocksOneRow: an order's transition locks its own row and nothing around
// it, so orders placed or paid meanwhile do not queue behind it. With a few hundred orders
// whose statistics are up to date (as in a flash sale), InnoDB's optimizer read the row
// through commerce_orders_step unless told otherwise, gap-locking the entries beside it.
func TestTransitionLocksOneRow(t *testing.T) {
	order := func(n int) *orderRow {
		return &orderRow{ID: fmt.Sprintf("ord_%06d", n), UserID: "user", IdemKey: fmt.Sprint(n), Status: StatusPendingPayment,
			Stock: stockReserved}
	}
	requireLocksOneRow(t, "commerce_orders", order, func(ctx context.Context, tx bun.Tx) {
		moved, err := transition(ctx, tx, order(4).ID, orderState{status: StatusPendingPayment}, time.Now(),
			map[string]any{"status": StatusPaying, "step": stepPay})
		require.NoError(t, err)
		require.True(t, moved)
	})
}

// TestFinishTopUpLocksOneRow: a top-up's completion (which holds its transaction open
// through the points charge and the event) locks the top-up's row only, so top-ups
// requested meanwhile do not queue behind it. The optimizer read the row through
// commerce_topups_status (status, id), gap-locking the PAYING entries beside it.
func TestFinishTopUpLocksOneRow(t *testing.T) {
	topUp := func(n int) *topUpRow {
		return &topUpRow{ID: fmt.Sprintf("top_%06d", n), UserID: "user", IdemKey: fmt.Sprint(n), Amount: 1000,
			Method: "CARD", Status: TopUpPaying}
	}
	s := &Service{cfg: settings{now: time.Now}}
	requireLocksOneRow(t, "commerce_topups", topUp, func(ctx context.Context, tx bun.Tx) {
		require.NoError(t, s.finishTopUp(ctx, tx, topUp(4), TopUpCompleted, ""))
	})
}

// requireLocksOneRow inserts rows 2, 4, …, 800 of table (made by row), brings its
// statistics up to date, runs update (of row 4) in a transaction and, while that is open,
// inserts row 5 (beside row 4 in every index) from another connection, which must not wait.
func requireLocksOneRow[R any](t *testing.T, table string, row func(int) *R, update func(context.Context, bun.Tx)) {
	t.Helper()
	ctx := context.Background()
	db := testenv.MySQL(t)
	require.NoError(t, CreateSchema(ctx, db))
	rows := make([]*R, 400)
	for i := range rows {
		rows[i] = row(2 * (i + 1)) // even numbers: odd ones fall between two rows
	}
	_, err := db.NewInsert().Model(&rows).Exec(ctx)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "ANALYZE TABLE "+table)
	require.NoError(t, err)

	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	update(ctx, tx)

	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "SET SESSION innodb_lock_wait_timeout = 1")
	require.NoError(t, err)
	_, err = conn.NewInsert().Model(row(5)).Exec(ctx)
	require.NoError(t, err, "a new row of %s waited for another row's update", table)
	require.NoError(t, tx.Commit())
}
