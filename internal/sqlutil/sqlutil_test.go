package sqlutil_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type item struct {
	bun.BaseModel `bun:"table:sqlutil_items"`
	ID            int64 `bun:"id,pk"`
	N             int64 `bun:"n,notnull"`
}

func backends(t *testing.T, fn func(t *testing.T, db *bun.DB)) {
	testenv.EachDB(t, func(t *testing.T, db *bun.DB) {
		_, err := db.NewCreateTable().Model((*item)(nil)).Exec(context.Background())
		require.NoError(t, err)
		fn(t, db)
	})
}

func count(t *testing.T, db bun.IDB) int64 {
	n, err := db.NewSelect().Model((*item)(nil)).Count(context.Background())
	require.NoError(t, err)
	return n
}

func TestDuplicateKey(t *testing.T) {
	backends(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		_, err := db.NewInsert().Model(&item{ID: 1}).Exec(ctx)
		require.NoError(t, err)
		_, err = db.NewInsert().Model(&item{ID: 1}).Exec(ctx)
		require.Error(t, err)
		assert.True(t, sqlutil.IsDuplicateKey(err), "%v", err)
		assert.False(t, sqlutil.IsRetryable(err))
		assert.False(t, sqlutil.IsDuplicateKey(errors.New("other")))
		assert.False(t, sqlutil.IsDuplicateKey(nil))
		assert.False(t, sqlutil.IsRetryable(nil))
	})
}

// TestInTxJoinsCallerTx: inside the caller's transaction a failing step is undone alone,
// the caller's own writes survive it, and nothing is committed until the caller commits.
func TestInTxJoinsCallerTx(t *testing.T) {
	backends(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		boom := errors.New("boom")
		err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			require.True(t, sqlutil.IsTx(tx))
			_, err := tx.NewInsert().Model(&item{ID: 1}).Exec(ctx)
			require.NoError(t, err)
			err = sqlutil.InTx(ctx, tx, func(ctx context.Context, tx bun.Tx) error {
				_, err := tx.NewInsert().Model(&item{ID: 2}).Exec(ctx)
				require.NoError(t, err)
				return boom
			})
			require.ErrorIs(t, err, boom)
			require.NoError(t, sqlutil.InTx(ctx, tx, func(ctx context.Context, tx bun.Tx) error {
				_, err := tx.NewInsert().Model(&item{ID: 3}).Exec(ctx)
				return err
			}))
			return nil
		})
		require.NoError(t, err)
		var ids []int64
		require.NoError(t, db.NewSelect().Model((*item)(nil)).Column("id").Order("id").Scan(ctx, &ids))
		assert.Equal(t, []int64{1, 3}, ids)

		// The caller's rollback takes the joined step with it.
		_ = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			require.NoError(t, sqlutil.InTx(ctx, tx, func(ctx context.Context, tx bun.Tx) error {
				_, err := tx.NewInsert().Model(&item{ID: 4}).Exec(ctx)
				return err
			}))
			return boom
		})
		assert.EqualValues(t, 2, count(t, db))
	})
}

// TestAllOrNothing: a marked call runs in the caller's transaction without a savepoint
// (its failed write stays until the owner rolls back); the calls it makes, and the calls
// of a transaction InTx begins for a marked ctx, get savepoints again.
func TestAllOrNothing(t *testing.T) {
	backends(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		boom := errors.New("boom")
		insert := func(ctx context.Context, tx bun.Tx, id int64, err error) error {
			_, ierr := tx.NewInsert().Model(&item{ID: id}).Exec(ctx)
			require.NoError(t, ierr)
			return err
		}
		undoneAlone := func(ctx context.Context, tx bun.Tx, id int64) {
			require.ErrorIs(t, sqlutil.InTx(ctx, tx, func(ctx context.Context, tx bun.Tx) error { return insert(ctx, tx, id, boom) }), boom)
		}
		_ = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			err := sqlutil.InTx(sqlutil.AllOrNothing(ctx), tx, func(ctx context.Context, tx bun.Tx) error {
				undoneAlone(ctx, tx, 2)
				return insert(ctx, tx, 1, boom)
			})
			require.ErrorIs(t, err, boom)
			assert.EqualValues(t, 1, count(t, tx), "no savepoint undid the marked call's write; its own call's was")
			return err
		})
		assert.Zero(t, count(t, db), "the owner rolled back")

		require.NoError(t, sqlutil.InTx(sqlutil.AllOrNothing(ctx), db, func(ctx context.Context, tx bun.Tx) error {
			undoneAlone(ctx, tx, 3)
			return insert(ctx, tx, 4, nil)
		}))
		assert.EqualValues(t, 1, count(t, db), "a transaction of InTx's own: its calls keep their savepoints")
	})
}

// TestInTxRetriesDeadlock provokes real MySQL deadlocks (two transactions locking two rows
// in opposite orders) and checks that InTx retries the victim so both increments land.
func TestInTxRetriesDeadlock(t *testing.T) {
	db := testenv.MySQL(t)
	ctx := context.Background()
	_, err := db.NewCreateTable().Model((*item)(nil)).Exec(ctx)
	require.NoError(t, err)
	_, err = db.NewInsert().Model(&[]item{{ID: 1}, {ID: 2}}).Exec(ctx)
	require.NoError(t, err)

	// Each attempt of a victim fails because the other transaction went on to commit, so
	// its deadlocks in a row are at most the other's rounds left: fewer rounds than
	// DefaultAttempts never exhaust the retries, however the server picks its victims (10
	// rounds did once, on a loaded machine: a victim of 8 deadlocks in a row).
	const rounds = sqlutil.DefaultAttempts - 2
	var wg sync.WaitGroup
	var retried sync.Map
	for w, order := range [][]int64{{1, 2}, {2, 1}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				attempts := 0
				err := sqlutil.InTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
					attempts++
					for _, id := range order {
						if _, err := tx.NewUpdate().Model((*item)(nil)).Set("n = n + 1").Where("id = ?", id).Exec(ctx); err != nil {
							return err
						}
						time.Sleep(20 * time.Millisecond)
					}
					return nil
				})
				assert.NoError(t, err)
				if attempts > 1 {
					retried.Store([2]int{w, r}, attempts)
				}
			}
		}()
	}
	wg.Wait()
	var items []item
	require.NoError(t, db.NewSelect().Model(&items).Order("id").Scan(ctx))
	assert.Equal(t, []item{{ID: 1, N: 2 * rounds}, {ID: 2, N: 2 * rounds}}, items)
	n := 0
	retried.Range(func(_, _ any) bool { n++; return true })
	assert.Positive(t, n, "the opposite lock orders should have deadlocked at least once")
	t.Logf("%d of %d transactions were retried after a deadlock", n, 2*rounds)
}

// TestInTxDoesNotWaitALockAgain: a transaction whose statement waited the server's whole
// lock wait for a row another transaction holds (1205) runs once, not DefaultAttempts
// times: it fails matching IsRetryable, for its caller's client to retry later, and
// changes nothing.
func TestInTxDoesNotWaitALockAgain(t *testing.T) {
	cfg := testkit.Must(mysql.ParseDSN(testenv.MySQLDSN(t)))(t)
	cfg.Params = map[string]string{"innodb_lock_wait_timeout": "1"}
	db := bun.NewDB(testkit.Must(sql.Open("mysql", cfg.FormatDSN()))(t), mysqldialect.New())
	t.Cleanup(func() { _ = db.Close() })
	ctx := t.Context()
	_, err := db.NewCreateTable().Model((*item)(nil)).Exec(ctx)
	require.NoError(t, err)
	_, err = db.NewInsert().Model(&item{ID: 1}).Exec(ctx)
	require.NoError(t, err)
	holder, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = holder.NewUpdate().Model((*item)(nil)).Set("n = 1").Where("id = 1").Exec(ctx)
	require.NoError(t, err)

	attempts := 0
	err = sqlutil.InTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
		attempts++
		_, err := tx.NewUpdate().Model((*item)(nil)).Set("n = 2").Where("id = 1").Exec(ctx)
		return err
	})
	require.Error(t, err)
	assert.True(t, sqlutil.IsRetryable(err), "%v", err)
	assert.Equal(t, 1, attempts)
	require.NoError(t, holder.Rollback())
	var got item
	require.NoError(t, db.NewSelect().Model(&got).Where("id = 1").Scan(ctx))
	assert.Equal(t, item{ID: 1}, got)
}

// TestInTxUnavailable: a transaction whose connection the server kills fails with an
// error matching errcode.ErrUnavailable, naming the dialect, and still matching the
// driver's own error; domain errors pass unchanged.
func TestInTxUnavailable(t *testing.T) {
	db := testenv.MySQL(t)
	ctx := t.Context()
	err := sqlutil.InTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
		var id int64
		if err := tx.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
			return err
		}
		if _, err := db.ExecContext(ctx, fmt.Sprintf("KILL %d", id)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "SELECT 1")
		return err
	})
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	require.ErrorIs(t, err, mysql.ErrInvalidConn)
	var u *errcode.UnavailableError
	require.ErrorAs(t, err, &u)
	assert.Equal(t, "mysql", u.Dependency)

	domain := errors.New("out of stock")
	assert.Same(t, domain, sqlutil.InTx(ctx, db, func(context.Context, bun.Tx) error { return domain }))
	assert.NoError(t, sqlutil.Unavailable(db, nil))
}

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

// TestCreateTablesAddsNewIndexes: a table created by an earlier version, without the
// indexes declared since and with rows in it, gets them when several processes start at
// once; a unique index over rows that repeat its key is an error naming it, and the table
// is left as it was.
func TestCreateTablesAddsNewIndexes(t *testing.T) {
	old := sqlutil.Table{Name: "sqlutil_grown", Columns: `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		code VARCHAR(16) NOT NULL,
		at BIGINT NOT NULL`}
	grown := old
	grown.Indexes = []sqlutil.Index{
		{Name: "sqlutil_grown_code", Columns: "code", Unique: true},
		{Name: "sqlutil_grown_at", Columns: "at, id"},
	}
	testenv.EachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		require.NoError(t, sqlutil.CreateTables(ctx, db, old))
		insert := "INSERT INTO sqlutil_grown (id, code, at) VALUES (?, ?, 1)"
		_, err := db.ExecContext(ctx, insert, "a", "X")
		require.NoError(t, err)

		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = sqlutil.CreateTables(ctx, db, grown)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
		_, err = db.ExecContext(ctx, insert, "b", "X")
		assert.True(t, sqlutil.IsDuplicateKey(err), "the unique index added later refuses a second code X: %v", err)
		var n int
		require.NoError(t, db.NewSelect().TableExpr("sqlutil_grown").ColumnExpr("COUNT(*)").Scan(ctx, &n))
		assert.Equal(t, 1, n, "the rows are kept")

		// A unique index the rows contradict cannot be added: the error names it.
		clash := sqlutil.Table{Name: "sqlutil_clash", Columns: old.Columns}
		require.NoError(t, sqlutil.CreateTables(ctx, db, clash))
		_, err = db.ExecContext(ctx, "INSERT INTO sqlutil_clash (id, code, at) VALUES ('a', 'X', 1), ('b', 'X', 2)")
		require.NoError(t, err)
		clash.Indexes = []sqlutil.Index{{Name: "sqlutil_clash_code", Columns: "code", Unique: true}}
		err = sqlutil.CreateTables(ctx, db, clash)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "sqlutil_clash_code")
		_, err = db.ExecContext(ctx, "INSERT INTO sqlutil_clash (id, code, at) VALUES ('c', 'X', 3)")
		assert.NoError(t, err, "the table was left without the index")
	})
}

// TestCreateTablesDropsReplacedIndexes: a table created by an earlier version with an index
// a later one replaced (Dropped) gets the new index and loses the old one when several
// processes start at once, keeps its rows, and a start after that changes nothing.
func TestCreateTablesDropsReplacedIndexes(t *testing.T) {
	old := sqlutil.Table{Name: "sqlutil_replaced", Columns: `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		code VARCHAR(16) NOT NULL,
		at BIGINT NOT NULL`,
		Indexes: []sqlutil.Index{{Name: "sqlutil_replaced_code", Columns: "code"}}}
	replaced := old
	replaced.Indexes = []sqlutil.Index{{Name: "sqlutil_replaced_code_at", Columns: "code, at"}}
	replaced.Dropped = []string{"sqlutil_replaced_code"}
	testenv.EachDB(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		indexes := func() []string {
			t.Helper()
			q := db.NewSelect().ColumnExpr("DISTINCT INDEX_NAME").TableExpr("information_schema.STATISTICS").
				Where("TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'sqlutil_replaced' AND INDEX_NAME <> 'PRIMARY'").OrderExpr("1")
			if sqlutil.IsSQLite(db) {
				q = db.NewSelect().Column("name").TableExpr("sqlite_master").
					Where("type = 'index' AND tbl_name = 'sqlutil_replaced' AND name NOT LIKE 'sqlite_autoindex%'").OrderExpr("1")
			}
			var names []string
			require.NoError(t, q.Scan(ctx, &names))
			return names
		}
		require.NoError(t, sqlutil.CreateTables(ctx, db, old))
		_, err := db.ExecContext(ctx, "INSERT INTO sqlutil_replaced (id, code, at) VALUES ('a', 'X', 1)")
		require.NoError(t, err)
		require.Equal(t, []string{"sqlutil_replaced_code"}, indexes())

		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() { errs[i] = sqlutil.CreateTables(ctx, db, replaced) })
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
		assert.Equal(t, []string{"sqlutil_replaced_code_at"}, indexes())
		require.NoError(t, sqlutil.CreateTables(ctx, db, replaced), "a later start")
		assert.Equal(t, []string{"sqlutil_replaced_code_at"}, indexes())
		var n int
		require.NoError(t, db.NewSelect().TableExpr("sqlutil_replaced").ColumnExpr("COUNT(*)").Scan(ctx, &n))
		assert.Equal(t, 1, n, "the rows are kept")
	})
}

// TestCreateTablesAddsIndexDespiteACrash: the database drops the connection just as an
// index is added to a table with rows; whatever that call answered, the next start adds
// the index and the rows are as they were.
func TestCreateTablesAddsIndexDespiteACrash(t *testing.T) {
	db := testenv.MySQL(t)
	ctx := context.Background()
	table := sqlutil.Table{Name: "sqlutil_crash", Columns: `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		code VARCHAR(16) NOT NULL`}
	require.NoError(t, sqlutil.CreateTables(ctx, db, table))
	_, err := db.ExecContext(ctx, "INSERT INTO sqlutil_crash (id, code) VALUES ('a', 'X'), ('b', 'Y')")
	require.NoError(t, err)
	table.Indexes = []sqlutil.Index{{Name: "sqlutil_crash_code", Columns: "code", Unique: true}}

	// On a connection of its own, so that the killer sees it.
	conn, err := testenv.KillBefore(t, db, "ADD UNIQUE INDEX sqlutil_crash_code").Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	err = sqlutil.CreateTables(ctx, conn, table)
	t.Logf("CreateTables with its connection killed: %v", err)
	require.NoError(t, sqlutil.CreateTables(ctx, db, table), "the next start")
	_, err = db.ExecContext(ctx, "INSERT INTO sqlutil_crash (id, code) VALUES ('c', 'X')")
	assert.True(t, sqlutil.IsDuplicateKey(err), "the index is there: %v", err)
	var codes []string
	require.NoError(t, db.NewSelect().TableExpr("sqlutil_crash").Column("code").Order("id").Scan(ctx, &codes))
	assert.Equal(t, []string{"X", "Y"}, codes, "the rows are as they were")
}

// TestCreateTablesDropsIndexDespiteACrash: the database drops the connection just as a
// replaced index is dropped; whatever that call answered, the next start leaves the table
// with the new index alone and its rows as they were.
func TestCreateTablesDropsIndexDespiteACrash(t *testing.T) {
	db := testenv.MySQL(t)
	ctx := context.Background()
	table := sqlutil.Table{Name: "sqlutil_crash_drop", Columns: `
		id VARCHAR(64) NOT NULL PRIMARY KEY,
		code VARCHAR(16) NOT NULL`,
		Indexes: []sqlutil.Index{{Name: "sqlutil_crash_drop_old", Columns: "code"}}}
	require.NoError(t, sqlutil.CreateTables(ctx, db, table))
	_, err := db.ExecContext(ctx, "INSERT INTO sqlutil_crash_drop (id, code) VALUES ('a', 'X'), ('b', 'Y')")
	require.NoError(t, err)
	table.Indexes = []sqlutil.Index{{Name: "sqlutil_crash_drop_new", Columns: "code, id"}}
	table.Dropped = []string{"sqlutil_crash_drop_old"}

	conn, err := testenv.KillBefore(t, db, "DROP INDEX sqlutil_crash_drop_old").Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	err = sqlutil.CreateTables(ctx, conn, table)
	t.Logf("CreateTables with its connection killed: %v", err)
	require.NoError(t, sqlutil.CreateTables(ctx, db, table), "the next start")
	var names []string
	require.NoError(t, db.NewSelect().ColumnExpr("DISTINCT INDEX_NAME").TableExpr("information_schema.STATISTICS").
		Where("TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'sqlutil_crash_drop' AND INDEX_NAME <> 'PRIMARY'").Scan(ctx, &names))
	assert.Equal(t, []string{"sqlutil_crash_drop_new"}, names)
	var codes []string
	require.NoError(t, db.NewSelect().TableExpr("sqlutil_crash_drop").Column("code").Order("id").Scan(ctx, &codes))
	assert.Equal(t, []string{"X", "Y"}, codes, "the rows are as they were")
}

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

// TestInTxDeadlineBeforeCommit: a deadline passing after the transaction's last statement
// and before its commit (database/sql has rolled the transaction back by then) fails InTx
// with an error matching context.DeadlineExceeded, not only sql.ErrTxDone, and commits
// nothing.
func TestInTxDeadlineBeforeCommit(t *testing.T) {
	backends(t, func(t *testing.T, db *bun.DB) {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		err := sqlutil.InTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.NewInsert().Model(&item{ID: 1}).Exec(ctx); err != nil {
				return err
			}
			<-ctx.Done()
			time.Sleep(50 * time.Millisecond) // database/sql's rollback runs meanwhile
			return nil
		})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, errcode.DeadlineExceeded, errcode.CodeOf(err))
		assert.Zero(t, count(t, db))
	})
}

// TestAddColumn: a table created by an earlier version, with rows in it, gets a column
// declared since when several processes start at once; its rows take the default, and
// adding it again changes nothing.
func TestAddColumn(t *testing.T) {
	backends(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		_, err := db.NewInsert().Model(&[]item{{ID: 1, N: 10}, {ID: 2, N: 20}}).Exec(ctx)
		require.NoError(t, err)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				assert.NoError(t, sqlutil.AddColumn(ctx, db, "sqlutil_items", "extra", "BIGINT NOT NULL DEFAULT 7"))
			})
		}
		wg.Wait()
		require.NoError(t, sqlutil.AddColumn(ctx, db, "sqlutil_items", "extra", "BIGINT NOT NULL DEFAULT 7"), "idempotent")
		var extra []int64
		require.NoError(t, db.NewSelect().Table("sqlutil_items").Column("extra").Order("id").Scan(ctx, &extra))
		assert.Equal(t, []int64{7, 7}, extra)
		assert.Equal(t, int64(2), count(t, db))
	})
}

// savepoints records the names of the savepoints set through a bun.DB.
type savepoints struct {
	mu    sync.Mutex
	names []string
}

func (s *savepoints) BeforeQuery(ctx context.Context, e *bun.QueryEvent) context.Context {
	if name, ok := strings.CutPrefix(e.Query, "SAVEPOINT "); ok {
		s.mu.Lock()
		s.names = append(s.names, name)
		s.mu.Unlock()
	}
	return ctx
}

func (*savepoints) AfterQuery(context.Context, *bun.QueryEvent) {}

// TestSavepointNamesAreFixed: InTx's savepoints are named by their depth, the same in every
// transaction, not at random: a statement digest (performance_schema, ProxySQL, a database
// monitor) is per statement text, and a random name made each SAVEPOINT a digest of its own,
// 3 per checkout, filling MariaDB's digest table (5,000 by default) within one flash sale so
// that every later statement went uncounted. Nested calls still undo only their own writes.
func TestSavepointNamesAreFixed(t *testing.T) {
	backends(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		rec := &savepoints{}
		db = db.WithQueryHook(rec)
		boom := errors.New("boom")
		insert := func(ctx context.Context, tx bun.Tx, id int64) {
			_, err := tx.NewInsert().Model(&item{ID: id}).Exec(ctx)
			require.NoError(t, err)
		}
		for round := int64(0); round < 2; round++ {
			require.NoError(t, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				return sqlutil.InTx(ctx, tx, func(ctx context.Context, tx bun.Tx) error {
					insert(ctx, tx, 10*round+1)
					require.ErrorIs(t, sqlutil.InTx(ctx, tx, func(ctx context.Context, tx bun.Tx) error {
						insert(ctx, tx, 10*round+2)
						return boom
					}), boom)
					return sqlutil.InTx(ctx, tx, func(ctx context.Context, tx bun.Tx) error {
						insert(ctx, tx, 10*round+3)
						return nil
					})
				})
			}))
		}
		var ids []int64
		require.NoError(t, db.NewSelect().Model((*item)(nil)).Column("id").Order("id").Scan(ctx, &ids))
		assert.Equal(t, []int64{1, 3, 11, 13}, ids, "the failed nested call was undone alone")
		one, two := "commercekit_sp1", "commercekit_sp2"
		assert.Equal(t, []string{one, two, two, one, two, two}, rec.names)
	})
}

// TestSavepointNamesIgnoreTheCallersContext: a nested call that is given a context other
// than the one its enclosing call passed to fn (a closure capturing the caller's ctx, as an
// IssuedFunc or an outbox handler calling another commercekit operation may) still gets a
// savepoint of its own. Named by the depth the context carries, it took the enclosing
// call's name: on MySQL a SAVEPOINT of an existing name replaces it, so the nested call's
// RELEASE removed the enclosing call's savepoint, and the enclosing call, failing, undid
// nothing of its writes (ROLLBACK TO a savepoint that no longer exists), leaving them in
// the caller's transaction, which committed them.
func TestSavepointNamesIgnoreTheCallersContext(t *testing.T) {
	backends(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		boom := errors.New("boom")
		insert := func(ctx context.Context, tx bun.Tx, id int64) error {
			_, err := tx.NewInsert().Model(&item{ID: id}).Exec(ctx)
			return err
		}
		var outer error
		require.NoError(t, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			outer = sqlutil.InTx(ctx, tx, func(_ context.Context, tx bun.Tx) error {
				if err := insert(ctx, tx, 1); err != nil {
					return err
				}
				// A nested operation given the caller's ctx, not this fn's.
				if err := sqlutil.InTx(ctx, tx, func(ctx context.Context, tx bun.Tx) error {
					return insert(ctx, tx, 2)
				}); err != nil {
					return err
				}
				return boom
			})
			return insert(ctx, tx, 3)
		}))
		assert.Equal(t, boom, outer, "the failed call's own error, its writes undone")
		var ids []int64
		require.NoError(t, db.NewSelect().Model((*item)(nil)).Column("id").Order("id").Scan(ctx, &ids))
		assert.Equal(t, []int64{3}, ids, "the failed call's writes, its nested call's included, were undone")
	})
}

// TestSavepointCtxEndedBeforeRelease: a call in the caller's transaction whose ctx ends
// after its last statement, before its savepoint is released (a caller's timeout on one
// operation inside its own transaction), fails with the ctx's error, and that error must
// mean its writes were undone: the caller's transaction, whose ctx has not ended, goes on
// and commits, and an operation it was told failed must not be in it.
func TestSavepointCtxEndedBeforeRelease(t *testing.T) {
	backends(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		var inner error
		require.NoError(t, db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			opCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			inner = sqlutil.InTx(opCtx, tx, func(ctx context.Context, tx bun.Tx) error {
				_, err := tx.NewInsert().Model(&item{ID: 1}).Exec(ctx)
				cancel() // the operation's timeout fires after its last statement
				return err
			})
			_, err := tx.NewInsert().Model(&item{ID: 2}).Exec(ctx)
			return err
		}))
		assert.ErrorIs(t, inner, context.Canceled)
		var ids []int64
		require.NoError(t, db.NewSelect().Model((*item)(nil)).Column("id").Order("id").Scan(ctx, &ids))
		assert.Equal(t, []int64{2}, ids, "the failed call's write was undone")
	})
}
