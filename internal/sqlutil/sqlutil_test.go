package sqlutil_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testenv"
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

	const rounds = 10
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
