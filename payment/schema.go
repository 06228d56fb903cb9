package payment

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// table describes one table portably: its columns and constraints as they read on both
// dialects, and its secondary indexes.
type table struct {
	name        string
	columns     []string // after the id column
	constraints []string
	indexes     []sqlutil.Index
}

// schema returns the payment tables.
func schema() []table {
	return []table{
		{
			name: "payment_payments",
			columns: []string{
				"order_id VARCHAR(64) NOT NULL",
				"amount BIGINT NOT NULL",
				"currency VARCHAR(3) NOT NULL",
				"method VARCHAR(16) NOT NULL",
				"token VARCHAR(255) NOT NULL",
				"state VARCHAR(24) NOT NULL",
				"pg_reference VARCHAR(128) NOT NULL",
				"decline_code VARCHAR(64) NOT NULL",
				"decline_message VARCHAR(255) NOT NULL",
				"refunded BIGINT NOT NULL",
				"refund_pending BIGINT NOT NULL",
				"created_at DATETIME(6) NOT NULL",
				"updated_at DATETIME(6) NOT NULL",
			},
			indexes: []sqlutil.Index{
				{Name: "payment_payments_order", Columns: "order_id"},
				{Name: "payment_payments_state", Columns: "state, updated_at"},
			},
		},
		{
			name: "payment_transitions",
			columns: []string{
				"payment_id VARCHAR(64) NOT NULL",
				"from_state VARCHAR(24) NOT NULL",
				"to_state VARCHAR(24) NOT NULL",
				"cause VARCHAR(32) NOT NULL",
				"detail VARCHAR(255) NOT NULL",
				"created_at DATETIME(6) NOT NULL",
			},
			// Each state is entered at most once: the database itself refuses a second
			// settlement even if a bug let two writers past the conditional update.
			constraints: []string{"CONSTRAINT payment_transitions_once UNIQUE (payment_id, to_state)"},
		},
		{
			name: "payment_refunds",
			columns: []string{
				"payment_id VARCHAR(64) NOT NULL",
				"amount BIGINT NOT NULL",
				"reason VARCHAR(255) NOT NULL",
				"state VARCHAR(16) NOT NULL",
				"pg_reference VARCHAR(128) NOT NULL",
				"failure_code VARCHAR(64) NOT NULL",
				"failure_message VARCHAR(255) NOT NULL",
				"created_at DATETIME(6) NOT NULL",
				"updated_at DATETIME(6) NOT NULL",
			},
			indexes: []sqlutil.Index{
				{Name: "payment_refunds_payment", Columns: "payment_id"},
				{Name: "payment_refunds_state", Columns: "state, updated_at"},
			},
		},
	}
}

// CreateSchema creates the payment tables (payment_payments, payment_transitions,
// payment_refunds) and their indexes if they do not exist. It is idempotent and works on
// MySQL/MariaDB and SQLite. On MySQL the tables use the utf8mb4_bin collation, so IDs compare
// byte for byte ("pay-A" and "pay-a" are two payments), as they do on SQLite, but for
// trailing spaces, which that collation ignores: IDs ending with a space are refused, and
// reads keep only the records of the exact ID.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	var tables []sqlutil.Table
	for _, t := range schema() {
		tables = append(tables, t.table())
	}
	if err := sqlutil.CreateTables(ctx, db, tables...); err != nil {
		return fmt.Errorf("payment: %w", err)
	}
	return nil
}

// table returns t for sqlutil.CreateTables, after its id column: a string on both
// dialects but for payment_transitions, numbered by the dialect's auto-increment.
func (t table) table() sqlutil.Table {
	columns := func(id string) string {
		return "\n\t" + strings.Join(slices.Concat([]string{id}, t.columns, t.constraints), ",\n\t")
	}
	if t.name == "payment_transitions" {
		return sqlutil.Table{Name: t.name, Indexes: t.indexes,
			Columns:       columns("id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY"),
			SQLiteColumns: columns("id INTEGER PRIMARY KEY AUTOINCREMENT")}
	}
	return sqlutil.Table{Name: t.name, Columns: columns("id VARCHAR(64) NOT NULL PRIMARY KEY"), Indexes: t.indexes}
}
