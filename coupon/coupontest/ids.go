package coupontest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/commercekit/commercekit/coupon"
)

// testIDsByteForByte: identifiers that differ only by case or by an accent are different
// identifiers. A database whose collation folds them (MySQL's utf8mb4_general_ci) must not
// make "CAMP" exist because "camp" does, "Alice" reach "alice"'s per-user limit, "Jose" be
// refused after "José", nor Restore("ORDER-X") give back order "order-x"'s coupon.
//
// On MySQL the coupon tables are first given the collation they inherited from a default
// database before the fix (utf8mb4_general_ci), and coupon.CreateSchema must migrate them.
func testIDsByteForByte(t *testing.T, h Harness) {
	ctx := context.Background()
	f := open(t, h)
	if f.DB.Dialect().Name() == dialect.MySQL {
		legacyCollation(t, f.DB)
		require.NoError(t, coupon.CreateSchema(ctx, f.DB), "the migration")
		var folding []string
		require.NoError(t, f.DB.NewRaw(`SELECT CONCAT(TABLE_NAME, '.', COLUMN_NAME) FROM information_schema.COLUMNS
			WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (?) AND COLLATION_NAME <> 'utf8mb4_bin'
			AND COLUMN_NAME IN ('id', 'template_id', 'user_id', 'request_id', 'order_id', 'coupon_id')`,
			bun.List(legacyTables)).Scan(ctx, &folding))
		require.Empty(t, folding, "ID columns left with a collation that folds case or accents")
	}
	f.template(t, coupon.Template{ID: "camp", PerUserLimit: 1, Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 1000}})
	_, err := f.Service.CreateTemplate(ctx, coupon.Template{ID: "CAMP", PerUserLimit: 1, Terms: coupon.Terms{Kind: coupon.FixedAmount, Amount: 2000}})
	require.NoError(t, err, "CAMP is not camp")
	for id, amount := range map[string]int64{"camp": 1000, "CAMP": 2000} {
		tpl, err := f.Service.Template(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, amount, tpl.Amount, id)
	}

	// One coupon each, under a per-user limit of 1, with request IDs that differ by case too.
	held := map[string]coupon.Coupon{}
	for _, user := range []string{"alice", "Alice", "José", "Jose"} {
		c, err := f.Service.Issue(ctx, "camp", user, "req-"+user)
		require.NoError(t, err, "%s is a user of their own", user)
		assert.Equal(t, user, c.UserID)
		held[user] = c
	}
	assert.Len(t, map[string]bool{held["alice"].ID: true, held["Alice"].ID: true, held["José"].ID: true, held["Jose"].ID: true}, 4)
	assert.Equal(t, int64(4), f.stats(t, "camp").Issued)
	assert.Equal(t, 1, f.maxPerUser(t, "camp"))

	// Orders order-x and ORDER-X: restoring one leaves the other's coupon held.
	_, err = f.Service.Reserve(ctx, held["alice"].ID, "alice", "order-x", 10_000)
	require.NoError(t, err)
	_, err = f.Service.Reserve(ctx, held["Alice"].ID, "Alice", "ORDER-X", 10_000)
	require.NoError(t, err)
	reds, err := f.Service.Restore(ctx, "ORDER-X")
	require.NoError(t, err)
	require.Len(t, reds, 1)
	assert.Equal(t, held["Alice"].ID, reds[0].CouponID)
	assert.Equal(t, coupon.StateAvailable, f.coupon(t, held["Alice"].ID).State)
	assert.Equal(t, coupon.StateReserved, f.coupon(t, held["alice"].ID).State, "order-x's coupon is still held")
	lower := f.redemptions(t, "order-x")
	require.Len(t, lower, 1)
	assert.Equal(t, coupon.RedemptionReserved, lower[0].State)
	_, err = f.Service.Restore(ctx, "Order-X")
	assert.ErrorIs(t, err, coupon.ErrRedemptionNotFound, "no order Order-X")
}

// legacyTables are the tables coupon.CreateSchema migrates.
var legacyTables = []string{"coupon_templates", "coupon_coupons", "coupon_redemptions"}

// legacyCollation gives every string column of legacyTables utf8mb4_general_ci, as tables
// created on a MySQL database with the default collation had before coupon made its ID
// columns binary.
func legacyCollation(t *testing.T, db *bun.DB) {
	t.Helper()
	ctx := context.Background()
	var cols []struct {
		Table    string `bun:"table_name"`
		Name     string `bun:"name"`
		Type     string `bun:"type"`
		Nullable string `bun:"nullable"`
	}
	require.NoError(t, db.NewRaw(`SELECT TABLE_NAME AS table_name, COLUMN_NAME AS name, COLUMN_TYPE AS type,
		IS_NULLABLE AS nullable FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (?) AND COLLATION_NAME IS NOT NULL`, bun.List(legacyTables)).Scan(ctx, &cols))
	require.NotEmpty(t, cols)
	for _, c := range cols {
		null := "NOT NULL"
		if c.Nullable == "YES" {
			null = "NULL"
		}
		_, err := db.NewRaw("ALTER TABLE ? MODIFY ? ? CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci "+null,
			bun.Ident(c.Table), bun.Ident(c.Name), bun.Safe(c.Type)).Exec(ctx)
		require.NoError(t, err)
	}
}
