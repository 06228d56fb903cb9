package redisserver_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/redisserver"
	"github.com/commercekit/commercekit/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// infoCounter counts the INFO commands a client sends.
type infoCounter struct{ n atomic.Int32 }

func (c *infoCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *infoCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "info" {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (c *infoCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestWatch: Current answers from memory while the pool opens no connection, reads INFO
// again after a restart (every connection broken, a new one opened), and tells an
// evicting configuration.
func TestWatch(t *testing.T) {
	ctx := context.Background()
	own := testenv.OwnRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: own.Addr})
	t.Cleanup(func() { rdb.Close() })
	infos := &infoCounter{}
	rdb.AddHook(infos)
	w := redisserver.NewWatch(rdb, "k")

	require.NoError(t, rdb.Ping(ctx).Err()) // the pool's connection, opened before the Watch reads
	first, err := w.Read(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, first.RunID)
	assert.False(t, first.Evicts())
	for range 5 {
		require.NoError(t, rdb.Ping(ctx).Err())
		srv, err := w.Current(ctx)
		require.NoError(t, err)
		assert.Equal(t, first.RunID, srv.RunID)
	}
	assert.EqualValues(t, 1, infos.n.Load(), "no new connection, no INFO")

	own.Stop(t, 0)
	own.Start(t)
	require.Eventually(t, func() bool { return rdb.Ping(ctx).Err() == nil }, 30*time.Second, 50*time.Millisecond)
	srv, err := w.Current(ctx)
	require.NoError(t, err)
	assert.NotEqual(t, first.RunID, srv.RunID, "the restarted server, read through a new connection")

	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "100mb").Err())
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err())
	w.Forget()
	srv, err = w.Current(ctx)
	require.NoError(t, err)
	assert.True(t, srv.Evicts())
}
