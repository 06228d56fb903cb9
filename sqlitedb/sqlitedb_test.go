package sqlitedb_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/sqlitedb"
)

type nulRow struct {
	bun.BaseModel `bun:"table:nul_rows"`
	ID            string `bun:"id,pk"`
	Name          string `bun:"name"`
}

// TestStringsWithNULBytes: strings holding NUL bytes are stored and found as they are, as
// on MySQL, in values, conditions, lists and updates; bun's own SQLite dialect refuses them, and
// every such statement failed ("unrecognized token").
func TestStringsWithNULBytes(t *testing.T) {
	db, err := sqlitedb.Open("file:" + t.TempDir() + "/nul.db")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	ctx := context.Background()
	_, err = db.NewCreateTable().Model((*nulRow)(nil)).Exec(ctx)
	require.NoError(t, err)
	rows := []nulRow{{ID: "a\x00b", Name: "\x00it's\x00\x00"}, {ID: "a", Name: "plain"}, {ID: "\x00", Name: ""}}
	_, err = db.NewInsert().Model(&rows).Exec(ctx)
	require.NoError(t, err)

	for _, want := range rows {
		var got nulRow
		require.NoError(t, db.NewSelect().Model(&got).Where("id = ?", want.ID).Scan(ctx), "%q", want.ID)
		assert.Equal(t, want, got)
	}
	n, err := db.NewSelect().Model((*nulRow)(nil)).Where("id = ?", "a\x00c").Count(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "no row has that ID: not found, as MySQL answers")
	n, err = db.NewSelect().Model((*nulRow)(nil)).Where("id IN (?)", bun.List([]string{"a\x00b", "\x00", "b"})).Count(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 2, n)
	_, err = db.NewUpdate().Model((*nulRow)(nil)).Set("name = ?", "x\x00").Where("id = ?", "\x00").Exec(ctx)
	require.NoError(t, err)
	var name string
	require.NoError(t, db.NewSelect().Model((*nulRow)(nil)).Column("name").Where("id = ?", "\x00").Scan(ctx, &name))
	assert.Equal(t, "x\x00", name)
}
