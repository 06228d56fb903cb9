package sqlinventory

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Column types per dialect. IDs and SKUs are printable ASCII (the inventory package
// enforces it), stored with a binary ASCII collation on MySQL so that keys compare byte
// for byte as in SQLite and Redis. Times are BIGINT Unix milliseconds (UTC), which compare
// correctly in every dialect.
const (
	mysqlKey    = "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL"
	mysqlItems  = "VARCHAR(3500) CHARACTER SET ascii COLLATE ascii_bin NOT NULL" // 50 × "sku=999" + commas
	mysqlReason = "VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL"
	mysqlEngine = " ENGINE=InnoDB"
)

// CreateSchema creates the package's tables and index if they do not exist: inventory_stock,
// inventory_reservations, inventory_buyer_usage and inventory_adjustments. It is idempotent
// and works on MySQL/MariaDB and SQLite.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	key, items, reason, suffix := mysqlKey, mysqlItems, mysqlReason, mysqlEngine
	dueIndex := ",\n INDEX inventory_reservations_due (state, expires_at)"
	if sqlutil.IsSQLite(db) {
		key, items, reason, suffix = "TEXT NOT NULL", "TEXT NOT NULL", "TEXT NOT NULL", ""
		dueIndex = ""
	}
	stmts := []string{
		`CREATE TABLE IF NOT EXISTS inventory_stock (
 sku ` + key + `,
 available BIGINT NOT NULL,
 reserved BIGINT NOT NULL DEFAULT 0,
 sold BIGINT NOT NULL DEFAULT 0,
 buyer_limit BIGINT NOT NULL DEFAULT 0,
 PRIMARY KEY (sku))` + suffix,
		`CREATE TABLE IF NOT EXISTS inventory_reservations (
 id ` + key + `,
 state ` + key + `,
 items ` + items + `,
 buyer_id ` + key + `,
 created_at BIGINT NOT NULL,
 expires_at BIGINT NOT NULL,
 resolved_at BIGINT NOT NULL DEFAULT 0,
 PRIMARY KEY (id)` + dueIndex + `)` + suffix,
		`CREATE TABLE IF NOT EXISTS inventory_buyer_usage (
 sku ` + key + `,
 buyer_id ` + key + `,
 qty BIGINT NOT NULL,
 PRIMARY KEY (sku, buyer_id))` + suffix,
		`CREATE TABLE IF NOT EXISTS inventory_adjustments (
 id ` + key + `,
 sku ` + key + `,
 delta BIGINT NOT NULL,
 reason ` + reason + `,
 created_at BIGINT NOT NULL,
 PRIMARY KEY (id))` + suffix,
	}
	if sqlutil.IsSQLite(db) {
		stmts = append(stmts, `CREATE INDEX IF NOT EXISTS inventory_reservations_due ON inventory_reservations (state, expires_at)`)
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("sqlinventory: creating schema: %w", err)
		}
	}
	return nil
}
