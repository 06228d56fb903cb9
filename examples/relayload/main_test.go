package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestRun drains a backlog of several default batches and relies on the driver's own check
// of the topic: every event exactly once, each key in sequence order.
func TestRun(t *testing.T) {
	rate, err := run(context.Background(), testenv.MySQLDSN(t), 1234, 0)
	require.NoError(t, err)
	require.Positive(t, rate)

	_, err = open("root@tcp(10.1.2.3:3306)/x")
	require.ErrorContains(t, err, "loopback")
}
