package dataplatform

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// TableDeliveries is the notifier's queue: one row per paid order (payment-completed
// event), pending, sent or dead.
const TableDeliveries = "commerce_dataplatform_deliveries"

var schema = sqlutil.Table{Name: TableDeliveries, Columns: `
		event_id VARCHAR(64) NOT NULL,
		order_id VARCHAR(128) NOT NULL,
		payload MEDIUMBLOB NOT NULL,
		state VARCHAR(8) NOT NULL,
		attempts INT NOT NULL,
		next_at DATETIME(6) NOT NULL,
		last_error TEXT NOT NULL,
		created_at DATETIME(6) NOT NULL,
		sent_at DATETIME(6) NULL,
		PRIMARY KEY (event_id)`,
	SQLiteColumns: `
		event_id VARCHAR(64) NOT NULL PRIMARY KEY,
		order_id VARCHAR(128) NOT NULL,
		payload BLOB NOT NULL,
		state VARCHAR(8) NOT NULL,
		attempts INT NOT NULL,
		next_at TIMESTAMP NOT NULL,
		last_error TEXT NOT NULL,
		created_at TIMESTAMP NOT NULL,
		sent_at TIMESTAMP NULL`,
	Indexes: []sqlutil.Index{{Name: "commerce_dataplatform_due", Columns: "state, next_at"}},
}

// CreateSchema creates the notifier's table if it does not exist (MySQL/MariaDB or
// SQLite). Its consumer also needs the outbox's tables (outbox.CreateSchema).
func CreateSchema(ctx context.Context, db bun.IDB) error {
	if err := sqlutil.CreateTables(ctx, db, schema); err != nil {
		return fmt.Errorf("dataplatform: %w", err)
	}
	return nil
}
