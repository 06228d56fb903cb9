package redisidempotency_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/payment/idempotency/idempotencytest"
	"github.com/commercekit/commercekit/payment/idempotency/redisidempotency"
)

// TestClusterConformance runs the suite on a Redis Cluster of three masters (the package
// doc says the backend works on one: the keys of one record share its hash tag). Each
// backend has a key prefix of its own.
func TestClusterConformance(t *testing.T) {
	cluster := testenv.RedisCluster(t).Client
	var n atomic.Int64
	idempotencytest.Run(t, idempotencytest.Harness{
		NewBackend: func(testing.TB) idempotency.Backend {
			return redisidempotency.New(cluster, redisidempotency.WithKeyPrefix(fmt.Sprintf("cluster-%d:", n.Add(1))))
		},
		ExpiresByItself: true,
	})
}
