package server

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/refserver/member"
)

// TestLimiterBucketsStaySmall: the Redis buckets of the write limit and of the login
// limits remember the calls that changed them, so that a call the Redis client sends again
// after a lost reply counts once; they must remember them no longer than that client can
// take to send a call again, since a bucket kept at its rate holds every call of that time.
// refserver's client (the default Redis timeout T = 500 ms, one retry) sends a call again
// within 11 T and a retry pause (under 1 s) of sending it first: the buckets remember a
// call for 12 T + 1 s = 7 s. A user writing at the write rate (20/s) for 65 s, logging in
// as often with the right password from one address (a take and a refund each): the
// write bucket holds its 5 fields of state and the last 140 writes (two fields each), the
// address's the last 140 logins (four fields each); the login ID's is reset by each login.
// (With a memory of a minute: 2405 and 4805 fields, about 240 and 480 KB per bucket.)
func TestLimiterBucketsStaySmall(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	cfg := Defaults()
	cfg.DBDSN = filepath.Join(t.TempDir(), "refserver.db")
	cfg.RedisAddr, cfg.RedisDB = rdb.Options().Addr, rdb.Options().DB
	cfg.SeedDemo = false
	cfg.JWTSecret, cfg.WebhookSecret = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	var (
		mu  sync.Mutex
		now = time.Now().Truncate(time.Second)
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, err := New(ctx, cfg, WithClock(clock), WithMemberOptions(member.WithBcryptCost(bcrypt.MinCost)))
	require.NoError(t, err)
	t.Cleanup(s.Close)
	_, err = s.members.SignUp(ctx, "steady", "correct horse")
	require.NoError(t, err)

	for i := range 1300 { // one every 50 ms: exactly the write rate
		ok, _ := s.limiter.allow(ctx, "writer")
		require.True(t, ok, "write %d", i)
		_, err := s.members.Login(ctx, "steady", "correct horse", "198.51.100.4")
		require.NoError(t, err, "login %d", i)
		mu.Lock()
		now = now.Add(50 * time.Millisecond)
		mu.Unlock()
	}
	fields := func(key string) int64 {
		n, err := rdb.HLen(ctx, key).Result()
		require.NoError(t, err)
		return n
	}
	assert.Equal(t, int64(5+2*140), fields(writeLimitPrefix+"writer"), "the write bucket")
	assert.Equal(t, int64(5+4*140), fields("commercekit:login:addr 198.51.100.4"), "the address's login bucket")
	assert.Equal(t, int64(0), fields("commercekit:login:id steady"), "the login ID's login bucket")
}
