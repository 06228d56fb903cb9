package commerce

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testkit"
)

// TestFinishTopUpRowsAffectedFails: a top-up's final UPDATE whose count of rows affected
// cannot be read fails with that error: it is not errLostRace, which its callers take for
// another flow having moved the top-up, answering it as they then read it (a top-up still
// PAYING, after a completion that rolled back) with no error.
func TestFinishTopUpRowsAffectedFails(t *testing.T) {
	ctx := context.Background()
	db, faults := testkit.FaultySQLite(t)
	require.NoError(t, CreateSchema(ctx, db))
	row := &topUpRow{ID: "top_1", UserID: "user", IdemKey: "k", Amount: 1000, Method: "CARD", Status: TopUpPaying,
		PaymentID: "pay-top_1"}
	_, err := db.NewInsert().Model(row).Exec(ctx)
	require.NoError(t, err)

	s := &Service{cfg: settings{now: time.Now}}
	faults.Arm(testkit.CountLost, "UPDATE", "commerce_topups")
	err = s.finishTopUp(ctx, db, row, TopUpFailed, "DECLINED")
	require.NotEmpty(t, faults.Disarm(), "the top-up's UPDATE")
	require.ErrorIs(t, err, testkit.ErrConnReset)
	require.NotErrorIs(t, err, errLostRace)
}
