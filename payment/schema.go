package payment

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// schema are the payment tables. Their columns read the same on both dialects, but for the
// auto-increment ID of payment_transitions (transitionColumns).
var schema = []sqlutil.Table{
	{Name: "payment_payments", Columns: `
	id VARCHAR(64) NOT NULL PRIMARY KEY,
	order_id VARCHAR(64) NOT NULL,
	amount BIGINT NOT NULL,
	currency VARCHAR(3) NOT NULL,
	method VARCHAR(16) NOT NULL,
	token VARCHAR(255) NOT NULL,
	state VARCHAR(24) NOT NULL,
	pg_reference VARCHAR(128) NOT NULL,
	decline_code VARCHAR(64) NOT NULL,
	decline_message VARCHAR(255) NOT NULL,
	refunded BIGINT NOT NULL,
	refund_pending BIGINT NOT NULL,
	created_at DATETIME(6) NOT NULL,
	updated_at DATETIME(6) NOT NULL`,
		Indexes: []sqlutil.Index{
			{Name: "payment_payments_order", Columns: "order_id"},
			{Name: "payment_payments_state", Columns: "state, updated_at"},
		}},
	{Name: "payment_transitions",
		Columns:       transitionColumns("id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY"),
		SQLiteColumns: transitionColumns("id INTEGER PRIMARY KEY AUTOINCREMENT")},
	{Name: "payment_refunds", Columns: `
	id VARCHAR(64) NOT NULL PRIMARY KEY,
	payment_id VARCHAR(64) NOT NULL,
	amount BIGINT NOT NULL,
	reason VARCHAR(255) NOT NULL,
	state VARCHAR(16) NOT NULL,
	pg_reference VARCHAR(128) NOT NULL,
	failure_code VARCHAR(64) NOT NULL,
	failure_message VARCHAR(255) NOT NULL,
	created_at DATETIME(6) NOT NULL,
	updated_at DATETIME(6) NOT NULL`,
		Indexes: []sqlutil.Index{
			{Name: "payment_refunds_payment", Columns: "payment_id"},
			{Name: "payment_refunds_state", Columns: "state, updated_at"},
		}},
}

// transitionColumns are the columns of payment_transitions after the dialect's
// auto-increment id. Each state is entered at most once: the database itself refuses a
// second settlement even if a bug let two writers past the conditional update.
func transitionColumns(id string) string {
	return `
	` + id + `,
	payment_id VARCHAR(64) NOT NULL,
	from_state VARCHAR(24) NOT NULL,
	to_state VARCHAR(24) NOT NULL,
	cause VARCHAR(32) NOT NULL,
	detail VARCHAR(255) NOT NULL,
	created_at DATETIME(6) NOT NULL,
	CONSTRAINT payment_transitions_once UNIQUE (payment_id, to_state)`
}

// CreateSchema creates the payment tables (payment_payments, payment_transitions,
// payment_refunds) and their indexes if they do not exist. It is idempotent and works on
// MySQL/MariaDB and SQLite. On MySQL the tables use the utf8mb4_bin collation, so IDs compare
// byte for byte ("pay-A" and "pay-a" are two payments), as they do on SQLite.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	if err := sqlutil.CreateTables(ctx, db, schema...); err != nil {
		return fmt.Errorf("payment: %w", err)
	}
	return nil
}
