package sqlutil_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
)

// TestCreateTables creates a table with a unique and a plain index twice on each dialect
// (it is idempotent), then checks the unique index is there and the dialect's columns were
// used.
func TestCreateTables(t *testing.T) {
	table := sqlutil.Table{
		Name: "sqlutil_schema",
		Columns: `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		code VARCHAR(16) NOT NULL,
		at DATETIME(6) NOT NULL`,
		SQLiteColumns: `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		code VARCHAR(16) NOT NULL,
		at TIMESTAMP NOT NULL`,
		Indexes: []sqlutil.Index{
			{Name: "sqlutil_schema_code", Columns: "code", Unique: true},
			{Name: "sqlutil_schema_at", Columns: "at, id"},
		},
	}
	testenv.EachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		require.NoError(t, sqlutil.CreateTables(ctx, db, table))
		require.NoError(t, sqlutil.CreateTables(ctx, db, table), "CreateTables is idempotent")

		insert := "INSERT INTO sqlutil_schema (id, code, at) VALUES (?, ?, '2026-01-02 03:04:05')"
		_, err := db.ExecContext(ctx, insert, "a", "X")
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, insert, "b", "X")
		assert.True(t, sqlutil.IsDuplicateKey(err), "the unique index refuses a second code X: %v", err)

		typ := "datetime(6)"
		q := db.NewSelect().ColumnExpr("LOWER(COLUMN_TYPE)").TableExpr("information_schema.COLUMNS").
			Where("TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'sqlutil_schema' AND COLUMN_NAME = 'at'")
		if sqlutil.IsSQLite(db) {
			typ = "timestamp"
			q = db.NewSelect().ColumnExpr("LOWER(type)").TableExpr("pragma_table_info('sqlutil_schema')").Where("name = 'at'")
		}
		var got string
		require.NoError(t, q.Scan(ctx, &got))
		assert.Equal(t, typ, got)
	})
}
