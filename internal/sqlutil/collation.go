package sqlutil

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

// BinaryCollation is the collation BinaryColumns gives identifier columns on MySQL/MariaDB.
const BinaryCollation = "utf8mb4_bin"

// charsetOrCollation matches a column definition's own CHARACTER SET or COLLATE clause.
var charsetOrCollation = regexp.MustCompile(`(?i)\s+(CHARACTER SET|CHARSET|COLLATE)\s+\w+`)

// BinaryColumns makes the named string columns of table compare byte for byte, so that no
// two identifiers are ever taken for one ("order-x" and "ORDER-X", "Jose" and "José"). On
// MySQL/MariaDB, a column whose collation is not utf8mb4_bin (e.g. one inherited from the
// database's utf8mb4_general_ci) is altered to CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
// keeping the rest of its definition as SHOW CREATE TABLE prints it (type, nullability,
// default, comment): a migration of existing tables as much as a step of creating new
// ones. It is idempotent (columns already binary are left alone), and does nothing on
// SQLite, which compares text byte for byte. Call it outside a transaction (DDL commits
// implicitly on MySQL).
func BinaryColumns(ctx context.Context, db bun.IDB, table string, columns ...string) error {
	if db.Dialect().Name() != dialect.MySQL {
		return nil
	}
	var found []struct {
		Name      string `bun:"name"`
		Collation string `bun:"collation"`
	}
	err := db.NewRaw(`SELECT COLUMN_NAME AS name, COALESCE(COLLATION_NAME, '') AS collation
		FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME IN (?)`, table, bun.List(columns)).Scan(ctx, &found)
	if err != nil {
		return fmt.Errorf("reading the collations of %s: %w", table, err)
	}
	if len(found) != len(columns) {
		return fmt.Errorf("table %s: found %d of the columns %v", table, len(found), columns)
	}
	var ddl string
	for _, c := range found {
		if c.Collation == BinaryCollation {
			continue
		}
		if ddl == "" {
			var name string
			if err := db.QueryRowContext(ctx, "SHOW CREATE TABLE `"+table+"`").Scan(&name, &ddl); err != nil {
				return fmt.Errorf("reading the definition of %s: %w", table, err)
			}
		}
		def, ok := columnDefinition(ddl, c.Name)
		if !ok {
			return fmt.Errorf("table %s: no definition of column %s in %q", table, c.Name, ddl)
		}
		typ, rest, _ := strings.Cut(charsetOrCollation.ReplaceAllString(def, ""), " ")
		_, err := db.NewRaw("ALTER TABLE ? MODIFY ? "+typ+" CHARACTER SET utf8mb4 COLLATE "+BinaryCollation+" "+rest,
			bun.Ident(table), bun.Ident(c.Name)).Exec(ctx)
		if err != nil {
			return fmt.Errorf("making %s.%s binary (was %s): %w", table, c.Name, c.Collation, err)
		}
	}
	return nil
}

// columnDefinition returns what follows the column's name on its line of a SHOW CREATE
// TABLE statement: "varchar(64) NOT NULL DEFAULT 'x'".
func columnDefinition(ddl, column string) (string, bool) {
	prefix := "`" + column + "` "
	for line := range strings.SplitSeq(ddl, "\n") {
		if def, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			return strings.TrimSuffix(def, ","), true
		}
	}
	return "", false
}
