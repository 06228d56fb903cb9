package sqlidempotency_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/payment/idempotency/sqlidempotency"
)

// eachDialect runs fn on a fresh database of each dialect with the schema created, and a
// store on it with a manual clock.
func eachDialect(t *testing.T, fn func(t *testing.T, db *bun.DB, b *sqlidempotency.Backend, s *idempotency.Store, clock *testclock.Clock)) {
	testenv.EachDB(t, func(t *testing.T, db *bun.DB) {
		require.NoError(t, sqlidempotency.CreateSchema(t.Context(), db))
		b := sqlidempotency.New(db)
		clock := testclock.New(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
		s, err := idempotency.New(b, idempotency.WithClock(clock.Now))
		require.NoError(t, err)
		fn(t, db, b, s, clock)
	})
}

type order struct {
	bun.BaseModel `bun:"table:sqlidempotency_test_orders"`
	ID            string `bun:"id,pk,type:varchar(64)"`
}

func TestCreateSchemaIsIdempotent(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *bun.DB, _ *sqlidempotency.Backend, s *idempotency.Store, _ *testclock.Clock) {
		ctx := t.Context()
		for range 2 {
			require.NoError(t, sqlidempotency.CreateSchema(ctx, db))
		}
		_, _, err := s.Do(ctx, "merchant-1", "key-1", "fp", approved)
		require.NoError(t, err)
		// Scope and key are kept for operators; times are UTC.
		var scope, key string
		var expires time.Time
		require.NoError(t, db.NewSelect().Table(sqlidempotency.Table).Column("scope", "idem_key", "expires_at").Scan(ctx, &scope, &key, &expires))
		assert.Equal(t, "merchant-1", scope)
		assert.Equal(t, "key-1", key)
		assert.Equal(t, time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), expires.UTC())
	})
}

func approved(context.Context) (idempotency.Response, error) {
	return idempotency.Response{Status: 201, Body: []byte(`{"status":"APPROVED"}`)}, nil
}

// TestCompleteJoinsCallerTx: the response is stored in the caller's transaction, so it
// commits or rolls back with the caller's own writes: there is never an order without its
// stored response, nor a stored response without its order.
func TestCompleteJoinsCallerTx(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *bun.DB, b *sqlidempotency.Backend, s *idempotency.Store, _ *testclock.Clock) {
		ctx := t.Context()
		require.True(t, s.JoinsTx())
		_, err := db.NewCreateTable().Model((*order)(nil)).Exec(ctx)
		require.NoError(t, err)
		c, err := s.Claim(ctx, "s", "k", "fp")
		require.NoError(t, err)
		resp := idempotency.Response{Status: 201, Body: []byte(`{"order":"o-1"}`)}
		errAbort := errors.New("abort")

		placeOrder := func(commit bool) error {
			return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				if _, err := tx.NewInsert().Model(&order{ID: "o-1"}).Exec(ctx); err != nil {
					return err
				}
				if err := s.WithBackend(b.WithTx(tx)).Complete(ctx, c, resp); err != nil {
					return err
				}
				if !commit {
					return errAbort
				}
				return nil
			})
		}
		require.ErrorIs(t, placeOrder(false), errAbort)
		n, err := db.NewSelect().Model((*order)(nil)).Count(ctx)
		require.NoError(t, err)
		assert.Zero(t, n)
		_, _, err = s.Do(ctx, "s", "k", "fp", approved)
		require.ErrorIs(t, err, idempotency.ErrInProgress, "rolled back: still running")

		require.NoError(t, placeOrder(true))
		got, replayed, err := s.Do(ctx, "s", "k", "fp", approved)
		require.NoError(t, err)
		assert.True(t, replayed)
		assert.Equal(t, resp.Body, got.Body)
		n, err = db.NewSelect().Model((*order)(nil)).Count(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 1, n)
	})
}

// TestClaimInCallerTx: a claim made in the caller's transaction exists only if it commits.
func TestClaimInCallerTx(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *bun.DB, b *sqlidempotency.Backend, s *idempotency.Store, _ *testclock.Clock) {
		ctx := t.Context()
		errAbort := errors.New("abort")
		claimIn := func(fp idempotency.Fingerprint, commit bool) error {
			return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				if _, err := s.WithBackend(b.WithTx(tx)).Claim(ctx, "s", "k", fp); err != nil {
					return err
				}
				if !commit {
					return errAbort
				}
				return nil
			})
		}
		require.ErrorIs(t, claimIn("fp-1", false), errAbort)
		require.NoError(t, claimIn("fp-2", true), "the rolled-back claim left nothing")
		_, err := s.Claim(ctx, "s", "k", "fp-2")
		require.ErrorIs(t, err, idempotency.ErrInProgress)
		require.ErrorIs(t, claimIn("fp-2", true), idempotency.ErrInProgress)
	})
}

// TestPurgeInBatches: more expired records than one purge statement deletes are all purged,
// and the live ones kept.
func TestPurgeInBatches(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *bun.DB, _ *sqlidempotency.Backend, s *idempotency.Store, clock *testclock.Clock) {
		ctx := t.Context()
		const expired = 1234 // two batches
		for i := range expired {
			_, err := s.Claim(ctx, "s", fmt.Sprint("old-", i), "fp")
			require.NoError(t, err)
		}
		clock.Advance(time.Hour)
		_, _, err := s.Do(ctx, "s", "young", "fp", approved)
		require.NoError(t, err)
		clock.Advance(idempotency.DefaultRetention - time.Hour)
		n, err := s.Purge(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, expired, n)
		left, err := db.NewSelect().Table(sqlidempotency.Table).Count(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 1, left)
	})
}

// TestContextErrorsAsTheyAre: a cancelled context comes back as context.Canceled.
func TestContextErrorsAsTheyAre(t *testing.T) {
	eachDialect(t, func(t *testing.T, _ *bun.DB, _ *sqlidempotency.Backend, s *idempotency.Store, _ *testclock.Clock) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := s.Claim(ctx, "s", "k", "fp")
		require.Equal(t, context.Canceled, err)
	})
}

// TestClaimDoesNotWaitALockAgain: a claim whose insert waited the server's whole lock wait
// behind another transaction's uncommitted claim of the same key (MySQL's 1205) fails at
// once with that error, for the client to retry later, instead of taking it for a lost
// race and waiting again, round after round.
func TestClaimDoesNotWaitALockAgain(t *testing.T) {
	db := testenv.MySQL(t)
	ctx := t.Context()
	require.NoError(t, sqlidempotency.CreateSchema(ctx, db))
	s, err := idempotency.New(sqlidempotency.New(db))
	require.NoError(t, err)
	holder, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = holder.Rollback() })
	_, err = s.WithBackend(sqlidempotency.New(holder)).Claim(ctx, "s", "k", "fp")
	require.NoError(t, err)

	_, err = s.WithBackend(sqlidempotency.New(testenv.ImpatientConn(t, db))).Claim(ctx, "s", "k", "fp")
	require.Error(t, err)
	assert.True(t, sqlutil.IsRetryable(err), "%v", err)
}
