package sqlutil

import (
	"context"
	"fmt"
	"strings"

	"github.com/uptrace/bun"
)

// Table describes a table for CreateTables.
type Table struct {
	// Name is the table's name.
	Name string
	// Columns are the column definitions and table constraints (primary key, checks).
	Columns string
	// SQLiteColumns, when set, replace Columns on SQLite, for tables whose column types
	// differ between the dialects.
	SQLiteColumns string
	// Indexes are the table's secondary indexes.
	Indexes []Index
}

// Index is a secondary index of a Table.
type Index struct {
	// Name is the index's name, Columns its comma-separated key columns.
	Name, Columns string
	// Unique makes it a unique index.
	Unique bool
}

// CreateTables creates each table and its indexes if they do not exist, on MySQL/MariaDB
// (InnoDB, utf8mb4 with a binary collation, so text compares byte for byte, and the
// indexes declared in the table) or on SQLite (the indexes created after the table, each
// with CREATE INDEX IF NOT EXISTS). It is idempotent. On MySQL, DDL commits implicitly:
// call it outside a transaction.
func CreateTables(ctx context.Context, db bun.IDB, tables ...Table) error {
	sqlite := IsSQLite(db)
	for _, t := range tables {
		for _, q := range t.statements(sqlite) {
			if _, err := db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("creating %s: %w", t.Name, err)
			}
		}
	}
	return nil
}

// statements are the DDL statements that create t on the dialect.
func (t Table) statements(sqlite bool) []string {
	if !sqlite {
		var keys strings.Builder
		for _, ix := range t.Indexes {
			fmt.Fprintf(&keys, ",\n\t%sKEY %s (%s)", ix.unique(), ix.Name, ix.Columns)
		}
		return []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s%s\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
			t.Name, t.Columns, keys.String())}
	}
	columns := t.Columns
	if t.SQLiteColumns != "" {
		columns = t.SQLiteColumns
	}
	stmts := []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s\n)", t.Name, columns)}
	for _, ix := range t.Indexes {
		stmts = append(stmts, fmt.Sprintf("CREATE %sINDEX IF NOT EXISTS %s ON %s (%s)", ix.unique(), ix.Name, t.Name, ix.Columns))
	}
	return stmts
}

func (ix Index) unique() string {
	if ix.Unique {
		return "UNIQUE "
	}
	return ""
}
