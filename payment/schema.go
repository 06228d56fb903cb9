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
	indexes     map[string]string // name -> column list
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
			indexes: map[string]string{
				"payment_payments_order": "order_id",
				"payment_payments_state": "state, updated_at",
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
			indexes: map[string]string{
				"payment_refunds_payment": "payment_id",
				"payment_refunds_state":   "state, updated_at",
			},
		},
	}
}

// CreateSchema creates the payment tables (payment_payments, payment_transitions,
// payment_refunds) and their indexes if they do not exist. It is idempotent and works on
// MySQL/MariaDB and SQLite. On MySQL the tables use the utf8mb4_bin collation, so IDs compare
// byte for byte ("pay-A" and "pay-a" are two payments), as they do on SQLite.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	sqlite := sqlutil.IsSQLite(db)
	for _, t := range schema() {
		var b strings.Builder
		fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s (\n\t", t.name)
		if t.name == "payment_transitions" {
			if sqlite {
				b.WriteString("id INTEGER PRIMARY KEY AUTOINCREMENT")
			} else {
				b.WriteString("id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY")
			}
		} else {
			b.WriteString("id VARCHAR(64) NOT NULL PRIMARY KEY")
		}
		for _, c := range slices.Concat(t.columns, t.constraints) {
			b.WriteString(",\n\t" + c)
		}
		if !sqlite {
			// MySQL has no CREATE INDEX IF NOT EXISTS (MariaDB has): declare them here.
			for name, cols := range t.indexes {
				fmt.Fprintf(&b, ",\n\tKEY %s (%s)", name, cols)
			}
		}
		b.WriteString("\n)")
		if !sqlite {
			b.WriteString(" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")
		}
		if _, err := db.ExecContext(ctx, b.String()); err != nil {
			return fmt.Errorf("payment: creating %s: %w", t.name, err)
		}
		if sqlite {
			for name, cols := range t.indexes {
				q := fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (%s)", name, t.name, cols)
				if _, err := db.ExecContext(ctx, q); err != nil {
					return fmt.Errorf("payment: creating index %s: %w", name, err)
				}
			}
		}
	}
	return nil
}
