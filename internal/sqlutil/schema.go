package sqlutil

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-sql-driver/mysql"
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
	// Dropped names the secondary indexes an earlier version declared that this one
	// replaced: dropped from a table that has them, once Indexes are all there.
	Dropped []string
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
// with CREATE INDEX IF NOT EXISTS). An index declared after a table was created, by a later
// version, is added to it (on MySQL with ALTER TABLE ... ADD INDEX, which InnoDB builds
// while the table stays writable), so a deployment gets the indexes its version's queries
// expect; one that cannot be built (a unique index over rows that repeat a key) is an
// error naming it. An index a table names in Dropped is then dropped if it is there, so
// that writes stop paying for it. It is idempotent. On MySQL, DDL commits implicitly: call it outside a
// transaction.
func CreateTables(ctx context.Context, db bun.IDB, tables ...Table) error {
	sqlite := IsSQLite(db)
	for _, t := range tables {
		if _, err := db.ExecContext(ctx, t.create(sqlite)); err != nil {
			return fmt.Errorf("creating %s: %w", t.Name, err)
		}
		if !sqlite {
			continue
		}
		for _, ix := range t.Indexes {
			q := fmt.Sprintf("CREATE %sINDEX IF NOT EXISTS %s ON %s (%s)", ix.unique(), ix.Name, t.Name, ix.Columns)
			if _, err := db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("adding index %s to %s: %w", ix.Name, t.Name, err)
			}
		}
		for _, name := range t.Dropped {
			if _, err := db.ExecContext(ctx, "DROP INDEX IF EXISTS "+name); err != nil {
				return fmt.Errorf("dropping index %s of %s: %w", name, t.Name, err)
			}
		}
	}
	if sqlite {
		return nil
	}
	return alterIndexes(ctx, db, tables)
}

// create is the statement that creates t, with its indexes on MySQL, if it does not exist.
func (t Table) create(sqlite bool) string {
	if sqlite {
		columns := t.Columns
		if t.SQLiteColumns != "" {
			columns = t.SQLiteColumns
		}
		return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s\n)", t.Name, columns)
	}
	var keys strings.Builder
	for _, ix := range t.Indexes {
		fmt.Fprintf(&keys, ",\n\t%sKEY %s (%s)", ix.unique(), ix.Name, ix.Columns)
	}
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s%s\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
		t.Name, t.Columns, keys.String())
}

// alterIndexes adds to the MySQL tables the indexes declared for them that they lack, then
// drops those they name in Dropped that they have: one read of information_schema for all
// of them, and nothing more when nothing is to change.
func alterIndexes(ctx context.Context, db bun.IDB, tables []Table) error {
	var names []string
	for _, t := range tables {
		if len(t.Indexes) > 0 || len(t.Dropped) > 0 {
			names = append(names, t.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	var have []struct {
		Table string `bun:"table_name"`
		Index string `bun:"index_name"`
	}
	err := db.NewSelect().ColumnExpr("DISTINCT TABLE_NAME AS table_name, INDEX_NAME AS index_name").
		TableExpr("information_schema.STATISTICS").
		Where("TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (?)", bun.List(names)).Scan(ctx, &have)
	if err != nil {
		return fmt.Errorf("reading the indexes: %w", err)
	}
	exists := make(map[[2]string]bool, len(have))
	for _, h := range have {
		exists[[2]string{h.Table, h.Index}] = true
	}
	for _, t := range tables {
		for _, ix := range t.Indexes {
			if exists[[2]string{t.Name, ix.Name}] {
				continue
			}
			q := fmt.Sprintf("ALTER TABLE %s ADD %sINDEX %s (%s)", t.Name, ix.unique(), ix.Name, ix.Columns)
			// Another process starting at the same moment may have added it first.
			if _, err := db.ExecContext(ctx, q); err != nil && !IsDuplicateIndex(err) {
				return fmt.Errorf("adding index %s to %s: %w", ix.Name, t.Name, err)
			}
		}
		for _, name := range t.Dropped {
			if !exists[[2]string{t.Name, name}] {
				continue
			}
			// Another process starting at the same moment may have dropped it first.
			if _, err := db.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s DROP INDEX %s", t.Name, name)); err != nil && !isMissingIndex(err) {
				return fmt.Errorf("dropping index %s of %s: %w", name, t.Name, err)
			}
		}
	}
	return nil
}

// isMissingIndex reports whether err is MySQL's answer to dropping an index a table does
// not have (1091, can't drop; check that it exists).
func isMissingIndex(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == mysqlMissingIndex
}

func (ix Index) unique() string {
	if ix.Unique {
		return "UNIQUE "
	}
	return ""
}
