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

var mysqlSchema = []string{`CREATE TABLE IF NOT EXISTS commerce_dataplatform_deliveries (
		event_id VARCHAR(64) NOT NULL,
		order_id VARCHAR(128) NOT NULL,
		payload MEDIUMBLOB NOT NULL,
		state VARCHAR(8) NOT NULL,
		attempts INT NOT NULL,
		next_at DATETIME(6) NOT NULL,
		last_error TEXT NOT NULL,
		created_at DATETIME(6) NOT NULL,
		sent_at DATETIME(6) NULL,
		PRIMARY KEY (event_id),
		KEY commerce_dataplatform_due (state, next_at)
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`}

var sqliteSchema = []string{`CREATE TABLE IF NOT EXISTS commerce_dataplatform_deliveries (
		event_id VARCHAR(64) NOT NULL PRIMARY KEY,
		order_id VARCHAR(128) NOT NULL,
		payload BLOB NOT NULL,
		state VARCHAR(8) NOT NULL,
		attempts INT NOT NULL,
		next_at TIMESTAMP NOT NULL,
		last_error TEXT NOT NULL,
		created_at TIMESTAMP NOT NULL,
		sent_at TIMESTAMP NULL
	)`,
	`CREATE INDEX IF NOT EXISTS commerce_dataplatform_due ON commerce_dataplatform_deliveries (state, next_at)`,
}

// CreateSchema creates the notifier's table if it does not exist (MySQL/MariaDB or
// SQLite). Its consumer also needs the outbox's tables (outbox.CreateSchema).
func CreateSchema(ctx context.Context, db bun.IDB) error {
	stmts := mysqlSchema
	if sqlutil.IsSQLite(db) {
		stmts = sqliteSchema
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("dataplatform: creating the schema: %w", err)
		}
	}
	return nil
}
