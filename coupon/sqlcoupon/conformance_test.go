package sqlcoupon_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/coupontest"
	"github.com/commercekit/commercekit/coupon/sqlcoupon"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// harness opens the SQL issuer on a fresh database from open.
func harness(open func(testing.TB) *bun.DB) coupontest.Harness {
	return coupontest.Harness{Open: func(t *testing.T, opts ...coupon.Option) coupontest.Env {
		db := open(t)
		ctx := context.Background()
		require.NoError(t, coupon.CreateSchema(ctx, db))
		require.NoError(t, sqlcoupon.CreateSchema(ctx, db))
		require.NoError(t, sqlcoupon.CreateSchema(ctx, db), "CreateSchema is idempotent")
		return coupontest.Env{Service: testkit.Must(coupon.New(db, sqlcoupon.New(), opts...))(t), DB: db}
	}}
}

func TestConformanceMySQL(t *testing.T) { coupontest.Run(t, harness(testenv.MySQL)) }

func TestConformanceSQLite(t *testing.T) { coupontest.Run(t, harness(testenv.SQLite)) }
