package cart

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// CreateSchema creates the cart's tables, commerce_carts (one row per user, locked by
// every change), commerce_cart_items and commerce_cart_checkouts (which order each
// checkout placed), if they do not exist. It is
// idempotent and works on MySQL/MariaDB (IDs compared byte for byte: a binary collation)
// and SQLite. Times are BIGINT microseconds since the Unix epoch.
func CreateSchema(ctx context.Context, db bun.IDB) error {
	for _, t := range []struct{ name, cols string }{
		{"commerce_carts", `user_id VARCHAR(64) NOT NULL PRIMARY KEY`},
		{"commerce_cart_items", `user_id VARCHAR(64) NOT NULL,
		product_id VARCHAR(64) NOT NULL,
		qty BIGINT NOT NULL,
		added_at BIGINT NOT NULL,
		updated_at BIGINT NOT NULL,
		PRIMARY KEY (user_id, product_id)`},
		{"commerce_cart_checkouts", `user_id VARCHAR(64) NOT NULL,
		idem_key VARCHAR(255) NOT NULL,
		order_key VARCHAR(64) NOT NULL,
		created_at BIGINT NOT NULL,
		PRIMARY KEY (user_id, idem_key)`},
	} {
		q := "CREATE TABLE IF NOT EXISTS " + t.name + " (" + t.cols + ")"
		if !sqlutil.IsSQLite(db) {
			q += " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
		}
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("cart: create %s: %w", t.name, err)
		}
	}
	return nil
}
