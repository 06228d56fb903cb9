package redisidempotency_test

import (
	"testing"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/payment/idempotency/idempotencytest"
	"github.com/commercekit/commercekit/payment/idempotency/redisidempotency"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var harness = idempotencytest.Harness{
	NewBackend: func(tb testing.TB) idempotency.Backend {
		return redisidempotency.New(testenv.Redis(tb))
	},
	ExpiresByItself: true,
}

func TestConformance(t *testing.T) { idempotencytest.Run(t, harness) }

// BenchmarkDo: see the package documentation for the command.
func BenchmarkDo(b *testing.B) { idempotencytest.Benchmark(b, harness) }
