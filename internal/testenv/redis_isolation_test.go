package testenv

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExternalRedisKeepsForeignData: pointed at someone's running Redis (as with
// COMMERCEKIT_REDIS_ADDR), the fixture never touches data it did not create. A Redis of the
// test's own stands in for the developer's, with their keys in databases 0 and 3; tests run
// on it, write, FLUSHDB (as the data-loss tests do) and try FLUSHALL; afterwards the
// developer's keys are all there, and the tests' databases are empty again.
func TestExternalRedisKeepsForeignData(t *testing.T) {
	addr, _, err := startRedisContainer()
	require.NoError(t, err)
	ctx := context.Background()
	on := func(db int) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: addr, DB: db})
		t.Cleanup(func() { c.Close() })
		return c
	}
	require.NoError(t, on(0).Set(ctx, "shared-key", "the developer's", 0).Err())
	require.NoError(t, on(3).HSet(ctx, "session:42", "user", "alice").Err())

	srv, err := newRedisServer(addr, "a stand-in for a developer's Redis", true, 16)
	require.NoError(t, err)
	used := make(chan int, 20)
	t.Run("tests", func(t *testing.T) {
		for i := range 20 { // more tests than databases: they wait for one another
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				rdb := srv.client(t)
				db := rdb.Options().DB
				used <- db
				assert.NotContains(t, []int{0, 3}, db, "a database holding data is never handed out")
				n, err := rdb.DBSize(ctx).Result()
				require.NoError(t, err)
				require.Zero(t, n)
				require.NoError(t, rdb.Set(ctx, "shared-key", "test", 0).Err())
				require.NoError(t, rdb.FlushDB(ctx).Err(), "the test's own database")
				require.NoError(t, rdb.Set(ctx, "left-behind", "test", 0).Err())
				assert.ErrorContains(t, rdb.FlushAll(ctx).Err(), "beyond the test's own Redis database")
				_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error { return p.FlushAll(ctx).Err() })
				assert.Error(t, err)
				assert.Error(t, rdb.Move(ctx, "left-behind", 0).Err())
			})
		}
	})
	close(used)
	got, err := on(0).Get(ctx, "shared-key").Result()
	require.NoError(t, err)
	assert.Equal(t, "the developer's", got)
	session, err := on(3).HGetAll(ctx, "session:42").Result()
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"user": "alice"}, session)
	for db := range used {
		n, err := on(db).DBSize(ctx).Result()
		require.NoError(t, err)
		assert.Zero(t, n, "database %d: what the test wrote is deleted", db)
	}

	// With no empty database left, a test fails loudly instead of using someone's.
	full, err := newRedisServer(addr, "a full Redis", true, 1)
	require.NoError(t, err)
	require.NoError(t, on(0).Set(ctx, "x", "y", 0).Err())
	ok := t.Run("no database", func(t *testing.T) {
		mt := &fatalRecorder{T: t}
		func() {
			defer func() { _ = recover() }()
			full.take(mt)
		}()
		assert.True(t, mt.fatal)
	})
	require.True(t, ok)
}

// fatalRecorder records a Fatal instead of ending the test.
type fatalRecorder struct {
	*testing.T
	fatal bool
}

func (f *fatalRecorder) Fatalf(string, ...any) { f.fatal = true; panic("fatal") }
func (f *fatalRecorder) Fatal(...any)          { f.fatal = true; panic("fatal") }
