package sqlutil_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
)

// TestBinaryColumnsKeepsDefinitions: the migration of a table with data, run twice, makes
// its ID columns compare byte for byte and keeps everything else of them: the rows, NOT
// NULL, the defaults and the comments.
func TestBinaryColumnsKeepsDefinitions(t *testing.T) {
	db := testenv.MySQL(t)
	ctx := context.Background()
	_, err := db.ExecContext(ctx, "CREATE TABLE coll_ids ("+
		"id VARCHAR(64) NOT NULL PRIMARY KEY, "+
		"code VARCHAR(32) NOT NULL DEFAULT 'none' COMMENT 'the code', "+
		"ref VARCHAR(64) NULL DEFAULT NULL, "+
		"name VARCHAR(64) NOT NULL DEFAULT '') DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci")
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "INSERT INTO coll_ids (id, code, ref, name) VALUES ('a', 'X', 'r', 'n'), ('b', DEFAULT, NULL, DEFAULT)")
	require.NoError(t, err)

	for range 2 {
		require.NoError(t, sqlutil.BinaryColumns(ctx, db, "coll_ids", "id", "code", "ref"))
	}

	var cols []struct {
		Name      string  `bun:"name"`
		Nullable  string  `bun:"nullable"`
		Default   *string `bun:"def"`
		Collation string  `bun:"collation"`
		Comment   string  `bun:"comment"`
	}
	require.NoError(t, db.NewRaw(`SELECT COLUMN_NAME AS name, IS_NULLABLE AS nullable, COLUMN_DEFAULT AS def,
		COLLATION_NAME AS collation, COLUMN_COMMENT AS comment FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'coll_ids' ORDER BY ORDINAL_POSITION`).Scan(ctx, &cols))
	require.Len(t, cols, 4)
	for _, c := range cols[:3] {
		assert.Equal(t, sqlutil.BinaryCollation, c.Collation, c.Name)
	}
	assert.Equal(t, "utf8mb4_general_ci", cols[3].Collation, "a column not named is left alone")
	assert.Equal(t, []string{"NO", "NO", "YES"}, []string{cols[0].Nullable, cols[1].Nullable, cols[2].Nullable})
	assert.Equal(t, "the code", cols[1].Comment)

	// The default is still there: a row that does not name the column gets it.
	_, err = db.ExecContext(ctx, "INSERT INTO coll_ids (id) VALUES ('A')")
	require.NoError(t, err, "'A' is another ID than 'a', and code keeps its default")
	var rows []struct {
		ID   string  `bun:"id"`
		Code string  `bun:"code"`
		Ref  *string `bun:"ref"`
	}
	require.NoError(t, db.NewRaw("SELECT id, code, ref FROM coll_ids ORDER BY id").Scan(ctx, &rows))
	require.Len(t, rows, 3)
	assert.Equal(t, "A", rows[0].ID)
	assert.Equal(t, "none", rows[0].Code)
	assert.Equal(t, "X", rows[1].Code)
	assert.Equal(t, "none", rows[2].Code)
	assert.Nil(t, rows[2].Ref)
}
