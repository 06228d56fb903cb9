package rediscoupon_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/coupontest"
	"github.com/commercekit/commercekit/coupon/rediscoupon"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestConformance runs the suite on Redis (the issuer) and MySQL (the durable records).
func TestConformance(t *testing.T) {
	coupontest.Run(t, coupontest.Harness{Open: func(t *testing.T, opts ...coupon.Option) coupontest.Env {
		db := testenv.MySQL(t)
		rdb := testenv.Redis(t)
		require.NoError(t, coupon.CreateSchema(context.Background(), db))
		return coupontest.Env{
			Service: testkit.Must(coupon.New(db, rediscoupon.New(rdb), opts...))(t),
			DB:      db,
			LoseIssuerState: func(t *testing.T) {
				require.NoError(t, rdb.FlushDB(context.Background()).Err())
			},
		}
	}})
}
