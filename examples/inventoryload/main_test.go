package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestRun drives every backend briefly, selling out a small stock, and relies on the
// driver's own end-state check.
func TestRun(t *testing.T) {
	rdb := testenv.Redis(t) // a database of the test's own
	for _, c := range []config{
		{backend: "sqlite", skus: 3, stock: 40, commit: true},
		{backend: "mysql", dsn: testenv.MySQLDSN(t), skus: 1, stock: 40, commit: false, buyers: true},
		{backend: "redis", addr: rdb.Options().Addr, redisDB: rdb.Options().DB, skus: 2, stock: 40, commit: true},
	} {
		t.Run(c.backend, func(t *testing.T) {
			c.clients, c.duration = 8, 300*time.Millisecond
			inv, closeFn, err := open(context.Background(), c)
			require.NoError(t, err)
			defer closeFn()
			r, err := run(context.Background(), inv, c)
			require.NoError(t, err)
			assert.LessOrEqual(t, r.done, int64(c.skus)*c.stock)
			t.Log("\n" + r.String())
		})
	}
	_, _, err := open(context.Background(), config{backend: "redis", addr: "10.1.2.3:6379"})
	require.ErrorContains(t, err, "loopback")
}
