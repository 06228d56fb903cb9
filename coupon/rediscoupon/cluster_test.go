package rediscoupon_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/coupon/coupontest"
	"github.com/commercekit/commercekit/coupon/rediscoupon"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
)

// TestClusterConformance runs the suite on a Redis Cluster of three masters (the package
// doc says the issuer works on one: each template's key is its own hash tag, so templates
// spread over the masters). Each environment has a key prefix of its own; losing the
// issuer's state deletes that prefix's keys on every master.
func TestClusterConformance(t *testing.T) {
	cluster := testenv.RedisCluster(t).Client
	var n atomic.Int64
	coupontest.Run(t, coupontest.Harness{Open: func(t *testing.T, opts ...coupon.Option) coupontest.Env {
		db := testenv.MySQL(t)
		require.NoError(t, coupon.CreateSchema(context.Background(), db))
		prefix := fmt.Sprintf("cluster-%d:", n.Add(1))
		return coupontest.Env{
			Service: testkit.Must(coupon.New(db, rediscoupon.New(cluster, rediscoupon.WithKeyPrefix(prefix)), opts...))(t),
			DB:      db,
			LoseIssuerState: func(t *testing.T) {
				require.NoError(t, cluster.ForEachMaster(context.Background(), func(ctx context.Context, node *redis.Client) error {
					keys, err := node.Keys(ctx, prefix+"*").Result()
					if err != nil || len(keys) == 0 {
						return err
					}
					for _, k := range keys { // one key per command: they lie in different slots
						if err := node.Del(ctx, k).Err(); err != nil {
							return err
						}
					}
					return nil
				}))
			},
		}
	}})
}
