package sqlidempotency_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/payment/idempotency/idempotencytest"
	"github.com/commercekit/commercekit/payment/idempotency/sqlidempotency"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func harness(open func(testing.TB) *bun.DB) idempotencytest.Harness {
	return idempotencytest.Harness{NewBackend: func(tb testing.TB) idempotency.Backend {
		db := open(tb)
		require.NoError(tb, sqlidempotency.CreateSchema(tb.Context(), db))
		return sqlidempotency.New(db)
	}}
}

func TestConformance(t *testing.T) {
	for _, d := range testenv.Databases() {
		t.Run(d.Name, func(t *testing.T) { idempotencytest.Run(t, harness(d.Open)) })
	}
}

// BenchmarkDo: see the package documentation for the command.
func BenchmarkDo(b *testing.B) {
	for _, d := range testenv.Databases() {
		b.Run(d.Name, func(b *testing.B) { idempotencytest.Benchmark(b, harness(d.Open)) })
	}
}
