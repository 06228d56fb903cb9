package redisidempotency_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/payment/idempotency"
	"github.com/commercekit/commercekit/payment/idempotency/redisidempotency"
)

func ok(context.Context) (idempotency.Response, error) {
	return idempotency.Response{Status: 201, ErrorCode: "", Body: []byte("approved")}, nil
}

// TestRecordLayout: one hash per key under a hash-tagged name, with a Redis TTL equal to
// the retention from every write, so Redis drops records by itself.
func TestRecordLayout(t *testing.T) {
	rdb := testenv.Redis(t)
	ctx := t.Context()
	b := redisidempotency.New(rdb)
	const retention = 2 * time.Hour
	s, err := idempotency.New(b, idempotency.WithRetention(retention))
	require.NoError(t, err)

	ref := idempotency.Ref{Scope: "merchant-1", Key: "{tricky}key"}
	key := b.Key(ref)
	assert.Equal(t, redisidempotency.DefaultKeyPrefix+"{"+ref.ID()+"}", key)
	assert.Equal(t, 1, strings.Count(key, "{"), "the caller's braces never reach the key name")

	c, err := s.Claim(ctx, ref.Scope, ref.Key, "fp")
	require.NoError(t, err)
	fields, err := rdb.HGetAll(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, "running", fields["state"])
	assert.Equal(t, c.Token, fields["tok"])
	assertTTL(t, rdb.PTTL(ctx, key).Val(), retention)

	require.NoError(t, s.Complete(ctx, c, idempotency.Response{Status: 201, Body: []byte("approved")}))
	fields, err = rdb.HGetAll(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, "done", fields["state"])
	assert.Equal(t, "approved", fields["body"])
	assert.NotContains(t, fields, "lock")
	assertTTL(t, rdb.PTTL(ctx, key).Val(), retention)

	keys, err := rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	assert.Equal(t, []string{key}, keys, "one Redis key per idempotency key")
}

// assertTTL: set, and not longer than the retention (a loose lower bound keeps the check
// free of timing).
func assertTTL(t *testing.T, got, retention time.Duration) {
	t.Helper()
	assert.LessOrEqual(t, got, retention)
	assert.Greater(t, got, retention/2)
}

// TestRecordDroppedByRedis: when Redis has dropped a record (its TTL ran out), the key is
// free and a stale owner's Complete is fenced.
func TestRecordDroppedByRedis(t *testing.T) {
	rdb := testenv.Redis(t)
	ctx := t.Context()
	b := redisidempotency.New(rdb)
	s, err := idempotency.New(b)
	require.NoError(t, err)
	c, err := s.Claim(ctx, "s", "k", "fp")
	require.NoError(t, err)
	require.NoError(t, rdb.Del(ctx, b.Key(c.Ref)).Err())

	require.ErrorIs(t, s.Complete(ctx, c, idempotency.Response{}), idempotency.ErrLockLost)
	_, replayed, err := s.Do(ctx, "s", "k", "another-request", ok)
	require.NoError(t, err)
	assert.False(t, replayed)
}

// TestDoAfterRedisLostTheClaim: Redis loses everything (a restart without persistence, a
// FLUSHALL) while a request runs. Nobody else holds its key: Do answers the work fn did —
// not ErrLockLost, which a server answers 409 request_in_progress, for a request that ran
// and that no other request took over — and stores it, so a retry with the key gets it
// replayed instead of running fn again.
func TestDoAfterRedisLostTheClaim(t *testing.T) {
	rdb := testenv.Redis(t)
	ctx := t.Context()
	s, err := idempotency.New(redisidempotency.New(rdb))
	require.NoError(t, err)
	runs := 0
	lose := func(ctx context.Context) (idempotency.Response, error) {
		runs++
		if err := rdb.FlushDB(ctx).Err(); err != nil {
			return idempotency.Response{}, err
		}
		return ok(ctx)
	}
	resp, replayed, err := s.Do(ctx, "s", "k", "fp", lose)
	require.NoError(t, err)
	assert.False(t, replayed)
	assert.Equal(t, "approved", string(resp.Body))

	resp, replayed, err = s.Do(ctx, "s", "k", "fp", lose)
	require.NoError(t, err)
	assert.True(t, replayed, "the response was stored")
	assert.Equal(t, "approved", string(resp.Body))
	assert.Equal(t, 1, runs)
}

// TestKeyPrefixesIsolate: two stores on one Redis with different prefixes do not meet.
func TestKeyPrefixesIsolate(t *testing.T) {
	rdb := testenv.Redis(t)
	ctx := t.Context()
	for _, prefix := range []string{"a:", "b:"} {
		s, err := idempotency.New(redisidempotency.New(rdb, redisidempotency.WithKeyPrefix(prefix)))
		require.NoError(t, err)
		_, replayed, err := s.Do(ctx, "s", "k", idempotency.Fingerprint("fp-"+prefix), ok)
		require.NoError(t, err)
		assert.False(t, replayed, prefix)
	}
	n, err := rdb.DBSize(ctx).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 2, n)
}

// TestScriptsReloaded: after the server forgets its scripts (restart, SCRIPT FLUSH), every
// operation still works.
func TestScriptsReloaded(t *testing.T) {
	rdb := testenv.Redis(t)
	ctx := t.Context()
	s, err := idempotency.New(redisidempotency.New(rdb))
	require.NoError(t, err)
	for i := range 3 {
		require.NoError(t, rdb.ScriptFlush(ctx).Err())
		_, replayed, err := s.Do(ctx, "s", "k", "fp", ok)
		require.NoError(t, err)
		assert.Equal(t, i > 0, replayed)
		require.NoError(t, rdb.ScriptFlush(ctx).Err())
		_, err = s.Purge(ctx)
		require.NoError(t, err)
	}
	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	c, err := s.Claim(ctx, "s", "k2", "fp")
	require.NoError(t, err)
	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	require.NoError(t, s.Release(ctx, c))
}

// TestContextErrorsAsTheyAre: a cancelled context comes back as context.Canceled.
func TestContextErrorsAsTheyAre(t *testing.T) {
	s, err := idempotency.New(redisidempotency.New(testenv.Redis(t)))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = s.Claim(ctx, "s", "k", "fp")
	require.Equal(t, context.Canceled, err)
	assert.False(t, s.JoinsTx())
}

// TestLateClaimAfterRelease: a claim that a stalled Redis runs after its token was
// released (the Store abandons a claim whose reply it never got) changes nothing, so the
// key is not held for a request that gave up; the tombstone expires by itself.
func TestLateClaimAfterRelease(t *testing.T) {
	rdb := testenv.Redis(t)
	ctx := t.Context()
	b := redisidempotency.New(rdb)
	ref := idempotency.Ref{Scope: "s", Key: "k"}
	require.ErrorIs(t, b.Release(ctx, ref, "tok-late"), idempotency.ErrLockLost, "nothing was held yet")

	now := time.Now()
	_, _, err := b.Claim(ctx, idempotency.ClaimRequest{Ref: ref, Fingerprint: "fp", Token: "tok-late",
		Now: now, LockedUntil: now.Add(time.Minute), ExpiresAt: now.Add(time.Hour)})
	require.ErrorIs(t, err, idempotency.ErrLockLost)
	n, err := rdb.Exists(ctx, b.Key(ref)).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the late claim stored nothing")
	ttl, err := rdb.PTTL(ctx, b.Key(ref)+":released:tok-late").Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, time.Duration(0))
	assert.LessOrEqual(t, ttl, redisidempotency.TombstoneTTL)

	s, err := idempotency.New(b)
	require.NoError(t, err)
	_, replayed, err := s.Do(ctx, ref.Scope, ref.Key, "fp", ok)
	require.NoError(t, err, "a new request with the key runs")
	assert.False(t, replayed)
}
