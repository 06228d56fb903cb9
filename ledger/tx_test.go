package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/ledger"
)

var errAbort = errors.New("checkout failed")

// TestWithTxJoinsTheCallersTransaction: operations on WithTx(tx) commit and roll back with
// the caller's transaction; a failed one undoes only itself.
func TestWithTxJoinsTheCallersTransaction(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		e.charge("c1", "alice", 100)

		err := e.db.RunInTx(e.ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			l := e.l.WithTx(tx)
			if _, err := l.Spend(ctx, ledger.SpendRequest{ID: "s1", User: "alice", Amount: 30}); err != nil {
				return err
			}
			if _, err := l.Hold(ctx, "h1", "alice", 20, time.Minute); err != nil {
				return err
			}
			return errAbort
		})
		require.ErrorIs(t, err, errAbort)
		assert.Equal(t, [2]int64{100, 0}, e.balance("alice"), "rolled back with the caller")
		assert.Len(t, e.history("alice"), 1)

		var replay, first ledger.Receipt
		err = e.db.RunInTx(e.ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			l := e.l.WithTx(tx)
			var err error
			if first, err = l.Spend(ctx, ledger.SpendRequest{ID: "s1", User: "alice", Amount: 40}); err != nil {
				return err
			}
			if _, err := l.Spend(ctx, ledger.SpendRequest{ID: "s2", User: "alice", Amount: 1000}); !errors.Is(err, ledger.ErrInsufficientPoints) {
				return errors.Join(errors.New("want ErrInsufficientPoints"), err)
			}
			if replay, err = l.Spend(ctx, ledger.SpendRequest{ID: "s1", User: "alice", Amount: 40}); err != nil {
				return err
			}
			if _, err := l.Charge(ctx, ledger.ChargeRequest{ID: "c2", User: "alice", Amount: 10}); err != nil {
				return err
			}
			b, err := l.Balance(ctx, "alice")
			if err == nil && b.Available != 70 {
				err = errors.New("the transaction does not see its own spend")
			}
			if err != nil {
				return err
			}
			_, err = l.Verify(ctx)
			return err
		})
		require.NoError(t, err, "a failed operation leaves the caller's transaction usable")
		assert.Equal(t, first, replay, "a repeat inside the same transaction returns the receipt")
		assert.Equal(t, [2]int64{70, 0}, e.balance("alice"))
		assert.Equal(t, []ledger.EntryType{"charge", "spend", "charge"}, types(e.history("alice")))
		e.verify()
	})
}
