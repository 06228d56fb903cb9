package sqlutil

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

// BinaryCollation is the collation BinaryColumns gives identifier columns on MySQL/MariaDB.
const BinaryCollation = "utf8mb4_bin"

// BinaryColumns makes the named string columns of table compare byte for byte, so that no
// two identifiers are ever taken for one ("order-x" and "ORDER-X", "Jose" and "José"). On
// MySQL/MariaDB, a column whose collation is not utf8mb4_bin (e.g. one inherited from the
// database's utf8mb4_general_ci) is altered to CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
// keeping its type and nullability: a migration of existing tables as much as a step of
// creating new ones. It is idempotent (columns already binary are left alone), and does
// nothing on SQLite, which compares text byte for byte. Call it outside a transaction (DDL
// commits implicitly on MySQL).
func BinaryColumns(ctx context.Context, db bun.IDB, table string, columns ...string) error {
	if db.Dialect().Name() != dialect.MySQL {
		return nil
	}
	var found []struct {
		Name      string `bun:"name"`
		Type      string `bun:"type"`
		Nullable  string `bun:"nullable"`
		Collation string `bun:"collation"`
	}
	err := db.NewRaw(`SELECT COLUMN_NAME AS name, COLUMN_TYPE AS type, IS_NULLABLE AS nullable,
		COALESCE(COLLATION_NAME, '') AS collation FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME IN (?)`, table, bun.List(columns)).Scan(ctx, &found)
	if err != nil {
		return fmt.Errorf("reading the collations of %s: %w", table, err)
	}
	if len(found) != len(columns) {
		return fmt.Errorf("table %s: found %d of the columns %v", table, len(found), columns)
	}
	for _, c := range found {
		if c.Collation == BinaryCollation {
			continue
		}
		null := "NOT NULL"
		if c.Nullable == "YES" {
			null = "NULL"
		}
		_, err := db.NewRaw("ALTER TABLE ? MODIFY ? ? CHARACTER SET utf8mb4 COLLATE "+BinaryCollation+" "+null,
			bun.Ident(table), bun.Ident(c.Name), bun.Safe(c.Type)).Exec(ctx)
		if err != nil {
			return fmt.Errorf("making %s.%s binary (was %s): %w", table, c.Name, c.Collation, err)
		}
	}
	return nil
}
