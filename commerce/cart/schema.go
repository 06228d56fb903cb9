package cart

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

var schema = []sqlutil.Table{
	{Name: "commerce_carts", Columns: `
		user_id VARCHAR(64) NOT NULL PRIMARY KEY,
		` + versionColumn + " " + versionDefinition},
	{Name: "commerce_cart_items", Columns: `
		user_id VARCHAR(64) NOT NULL,
		product_id VARCHAR(64) NOT NULL,
		qty BIGINT NOT NULL,
		added_at BIGINT NOT NULL,
		updated_at BIGINT NOT NULL,
		PRIMARY KEY (user_id, product_id)`},
	{Name: "commerce_cart_checkouts", Columns: `
		user_id VARCHAR(64) NOT NULL,
		idem_key VARCHAR(255) NOT NULL,
		order_key VARCHAR(64) NOT NULL,
		created_at BIGINT NOT NULL,
		PRIMARY KEY (user_id, idem_key)`},
	{Name: "commerce_cart_adds", Columns: `
		user_id VARCHAR(64) NOT NULL,
		idem_key VARCHAR(255) NOT NULL,
		product_id VARCHAR(64) NOT NULL,
		qty BIGINT NOT NULL,
		created_at BIGINT NOT NULL,
		PRIMARY KEY (user_id, idem_key)`},
}

// The column version was added after commerce_carts (2026-12-02): CreateSchema adds it to
// a table created before.
const versionColumn, versionDefinition = "version", "BIGINT NOT NULL DEFAULT 0"

// CreateSchema creates the cart's tables, commerce_carts (one row per user, locked and
// its version bumped by every change), commerce_cart_items, commerce_cart_checkouts (which order each
// checkout placed) and commerce_cart_adds (the keys of AddOnce), if they do not exist. It is
// idempotent and works on MySQL/MariaDB (IDs compared byte for byte: a binary collation)
// and SQLite. Times are BIGINT microseconds since the Unix epoch. It adds to the tables
// the columns a later version added. On MySQL, DDL commits implicitly: call it outside a
// transaction.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	if err := sqlutil.CreateTables(ctx, db, schema...); err != nil {
		return fmt.Errorf("cart: %w", err)
	}
	if err := sqlutil.AddColumn(ctx, db, "commerce_carts", versionColumn, versionDefinition); err != nil {
		return fmt.Errorf("cart: %w", err)
	}
	return nil
}
