package sqlutil

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"
)

// AddColumn adds to table, created by an earlier version, the column a later version
// declares (name and its definition, e.g. "BIGINT NOT NULL DEFAULT 0": it must have a
// default, which the existing rows take), unless the table has it. It is idempotent and
// safe when several processes start at once (one adds it, the others find it). On MySQL,
// DDL commits implicitly: call it outside a transaction.
func AddColumn(ctx context.Context, db bun.IDB, table, name, definition string) error {
	has := func() (bool, error) {
		q := db.NewSelect().TableExpr("information_schema.COLUMNS").
			Where("TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?", table, name)
		if IsSQLite(db) {
			q = db.NewSelect().TableExpr("pragma_table_info(?)", table).Where("name = ?", name)
		}
		n, err := q.Count(ctx)
		return n > 0, err
	}
	ok, err := has()
	if err == nil && !ok {
		_, err = db.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", table, name, definition))
		if err != nil {
			if ok, herr := has(); herr == nil && ok { // another process added it first
				err = nil
			}
		}
	}
	if err != nil {
		return fmt.Errorf("adding column %s to %s: %w", name, table, err)
	}
	return nil
}
