package member_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/refserver/member"
)

// ownDenylist is a RedisDenylist on a Redis of the test's own, built from SQL.
func ownDenylist(t *testing.T) (*testenv.Own, *redis.Client, *member.RedisDenylist) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	own := testenv.OwnRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: own.Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	d := member.NewRedisDenylist(rdb, member.NewSQLDenylist(db, nil))
	_, err := d.Denied(ctx, "warm-up")
	require.NoError(t, err)
	return own, rdb, d
}

// TestRedisDenylistDenyWriteFailsClosed: a Deny whose SQL write succeeded but whose Redis
// write failed (here: Redis out of memory under noeviction, which still answers reads)
// must not leave the token answered "not revoked": the check answers revoked or 503.
func TestRedisDenylistDenyWriteFailsClosed(t *testing.T) {
	_, rdb, d := ownDenylist(t)
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "1").Err())
	err := d.Deny(ctx, "stolen", time.Now().Add(time.Hour))
	require.ErrorIs(t, err, errcode.ErrUnavailable, "the Redis write failed")
	for range 3 {
		denied, err := d.Denied(ctx, "stolen")
		if err != nil {
			require.ErrorIs(t, err, errcode.ErrUnavailable)
			continue
		}
		require.True(t, denied, "a token whose denial is recorded in SQL answered 'not revoked'")
	}
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "0").Err())
	require.Eventually(t, func() bool {
		denied, err := d.Denied(ctx, "stolen")
		return err == nil && denied
	}, 5*time.Second, 50*time.Millisecond)
}

// TestRedisDenylistRestartFromSnapshot: a Redis with RDB persistence that crashes restarts
// from its last snapshot: the marker is in it, the entries written after it are not.
func TestRedisDenylistRestartFromSnapshot(t *testing.T) {
	own, rdb, d := ownDenylist(t)
	require.NoError(t, d.Deny(ctx, "before", time.Now().Add(time.Hour)))
	require.NoError(t, rdb.Save(ctx).Err())
	require.NoError(t, d.Deny(ctx, "after", time.Now().Add(time.Hour)))
	own.Stop(t, 0) // crash: the writes since the snapshot are lost
	own.Start(t)
	require.Eventually(t, func() bool { return rdb.Ping(ctx).Err() == nil }, 10*time.Second, 50*time.Millisecond)
	for _, jti := range []string{"after", "before"} {
		var denied bool
		require.Eventually(t, func() bool { // a 503 (a broken connection, a rebuild) is retried
			var err error
			denied, err = d.Denied(ctx, jti)
			if err != nil {
				require.ErrorIs(t, err, errcode.ErrUnavailable)
				return false
			}
			return true
		}, 5*time.Second, 20*time.Millisecond)
		assert.True(t, denied, "%s: revoked token answered 'not revoked' after a restart from a snapshot", jti)
	}
}

// TestRedisDenylistRefusesAnEvictingRedis: a Redis that may evict keys (a memory limit and
// a policy other than noeviction) could drop a revoked token's entry and keep the marker,
// so the check fails closed on it, found when a new connection reads the server's
// configuration, and answers again once the policy is noeviction.
func TestRedisDenylistRefusesAnEvictingRedis(t *testing.T) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	own := testenv.OwnRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: own.Addr})
	t.Cleanup(func() { admin.Close() })
	records := member.NewSQLDenylist(db, nil)
	check := func() (bool, error) { // through a client of its own: a new connection
		rdb := redis.NewClient(&redis.Options{Addr: own.Addr})
		defer rdb.Close()
		return member.NewRedisDenylist(rdb, records).Denied(ctx, "stolen")
	}
	require.NoError(t, member.NewRedisDenylist(admin, records).Deny(ctx, "stolen", time.Now().Add(time.Hour)))
	require.NoError(t, admin.ConfigSet(ctx, "maxmemory", "100mb").Err())
	require.NoError(t, admin.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err())
	_, err := check()
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	assert.Contains(t, err.Error(), "noeviction")

	require.NoError(t, admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	denied, err := check()
	require.NoError(t, err)
	assert.True(t, denied)
}
