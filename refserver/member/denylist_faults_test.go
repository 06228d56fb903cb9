package member_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/refserver/member"
)

// failingRedis is the Redis denylist after its Redis went away, for good.
type failingRedis struct {
	up   member.Denylist // the live Redis denylist
	down member.Denylist // the same, through a closed client: every call fails
	mu   sync.Mutex
	// okDenies is how many more Deny calls reach the live Redis before it goes away.
	okDenies int
}

func (f *failingRedis) pick() member.Denylist {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.okDenies > 0 {
		f.okDenies--
		return f.up
	}
	return f.down
}

func (f *failingRedis) Deny(ctx context.Context, jti string, until time.Time) error {
	return f.pick().Deny(ctx, jti, until)
}

func (f *failingRedis) Denied(ctx context.Context, jti string) (bool, error) {
	return f.up.Denied(ctx, jti)
}

// faultEnv is a full-mode member service whose Redis fails after okDenies denials, and a
// second service on the same MariaDB and Redis that keeps working (the retry, on another
// server instance or after Redis came back).
func faultEnv(t *testing.T, okDenies int) (flaky, healthy *member.Service) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	rdb := testenv.Redis(t)
	records := member.NewSQLDenylist(db, nil)
	up := member.NewRedisDenylist(rdb, records)
	_, err := up.Denied(ctx, "warm-up") // Redis built from SQL, as a running server's is
	require.NoError(t, err)
	opts := *rdb.Options() // the test's own database
	opts.DialTimeout = 200 * time.Millisecond
	closed := redis.NewClient(&opts)
	require.NoError(t, closed.Close())
	deny := &failingRedis{up: up, down: member.NewRedisDenylist(closed, records), okDenies: okDenies}
	flaky, err = member.New(db, deny, secret, member.WithBcryptCost(bcrypt.MinCost))
	require.NoError(t, err)
	healthy, err = member.New(db, up, secret, member.WithBcryptCost(bcrypt.MinCost))
	require.NoError(t, err)
	return flaky, healthy
}

func jtiOf(t *testing.T, token string) string {
	t.Helper()
	e := &env{clock: testclock.New(time.Now())}
	return e.claims(t, token).ID
}

// TestReuseDenialRetried: when the denylist fails after a reuse revoked the session, the
// answer is a 503 and a retry still denies every live access token of the family (it
// used to answer "invalid refresh token" and leave the thief's access token valid).
func TestReuseDenialRetried(t *testing.T) {
	flaky, healthy := faultEnv(t, 0)
	_, err := healthy.SignUp(ctx, "alice", "correct horse")
	require.NoError(t, err)
	t1, err := healthy.Login(ctx, "alice", "correct horse", "10.0.0.1")
	require.NoError(t, err)
	t2, err := healthy.Refresh(ctx, t1.RefreshToken) // the thief's pair
	require.NoError(t, err)

	_, err = flaky.Refresh(ctx, t1.RefreshToken) // the victim presents the old token
	require.ErrorIs(t, err, errcode.ErrUnavailable)

	_, err = healthy.Refresh(ctx, t1.RefreshToken) // the retry
	require.Error(t, err)
	for _, tok := range []member.Tokens{t1, t2} {
		denied, err := healthy.Revoked(ctx, jtiOf(t, tok.AccessToken))
		require.NoError(t, err)
		assert.True(t, denied, "every live access token of the revoked family is denied")
	}
	_, err = healthy.Refresh(ctx, t2.RefreshToken)
	assert.ErrorIs(t, err, member.ErrInvalidRefreshToken, "the family is revoked")
}

// TestLogoutDenialRetried: when the denylist fails part-way through a logout, the
// caller's own token is not yet denied, so its retry (which the server only lets through
// with a token not on the denylist) can finish denying the session's tokens.
func TestLogoutDenialRetried(t *testing.T) {
	flaky, healthy := faultEnv(t, 1)
	_, err := healthy.SignUp(ctx, "alice", "correct horse")
	require.NoError(t, err)
	t1, err := healthy.Login(ctx, "alice", "correct horse", "10.0.0.1")
	require.NoError(t, err)
	t2, err := healthy.Refresh(ctx, t1.RefreshToken)
	require.NoError(t, err)
	c2 := (&env{clock: testclock.New(time.Now())}).claims(t, t2.AccessToken)

	err = flaky.Logout(ctx, c2.ID, c2.SessionID, c2.ExpiresAt.Time)
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	denied, err := healthy.Revoked(ctx, c2.ID)
	require.NoError(t, err)
	require.False(t, denied, "the caller's token is denied last, so that it can retry")
	// (Its SQL record is written: were Redis rebuilt now, the token would be denied
	// without the retry, and the retry would get 401.)

	require.NoError(t, healthy.Logout(ctx, c2.ID, c2.SessionID, c2.ExpiresAt.Time))
	for _, tok := range []member.Tokens{t1, t2} {
		denied, err := healthy.Revoked(ctx, jtiOf(t, tok.AccessToken))
		require.NoError(t, err)
		assert.True(t, denied)
	}
}

// TestRedisDenylistSurvivesARestart: a Redis killed and started again empty must not answer
// "not revoked" for a token that was: the first check after it rebuilds Redis from the SQL
// records. Checks racing a rebuild answer revoked or 503, never "not revoked".
func TestRedisDenylistSurvivesARestart(t *testing.T) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	own := testenv.OwnRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: own.Addr})
	defer rdb.Close()
	svc, err := member.New(db, member.NewRedisDenylist(rdb, member.NewSQLDenylist(db, nil)), secret, member.WithBcryptCost(bcrypt.MinCost))
	require.NoError(t, err)
	_, err = svc.SignUp(ctx, "alice", "correct horse")
	require.NoError(t, err)
	var claims [2]member.AccessClaims
	for i := range claims {
		tok, err := svc.Login(ctx, "alice", "correct horse", "10.5.0.1")
		require.NoError(t, err)
		claims[i] = (&env{clock: testclock.New(time.Now())}).claims(t, tok.AccessToken)
	}
	out, kept := claims[0], claims[1]
	require.NoError(t, svc.Logout(ctx, out.ID, out.SessionID, out.ExpiresAt.Time))
	requireRevoked := func(jti string, want bool) {
		t.Helper()
		got, err := svc.Revoked(ctx, jti)
		require.NoError(t, err)
		require.Equal(t, want, got, jti)
	}
	requireRevoked(out.ID, true)
	requireRevoked(kept.ID, false)

	own.Stop(t, 0) // SIGKILL: nothing saved
	own.Start(t)
	require.Eventually(t, func() bool { return rdb.Ping(ctx).Err() == nil }, 10*time.Second, 50*time.Millisecond)
	n, err := rdb.DBSize(ctx).Result()
	require.NoError(t, err)
	require.Zero(t, n, "Redis came back empty")
	requireRevoked(out.ID, true)
	requireRevoked(kept.ID, false)

	require.NoError(t, rdb.FlushDB(ctx).Err())
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			revoked, err := svc.Revoked(ctx, out.ID)
			if err != nil {
				assert.ErrorIs(t, err, errcode.ErrUnavailable)
				return
			}
			assert.True(t, revoked, "never 'not revoked' while Redis is rebuilt")
		}()
	}
	wg.Wait()
	requireRevoked(out.ID, true)
	requireRevoked(kept.ID, false)
}

// TestDenialOutlivesAPartition: a thief replays nothing and retries nothing. When the
// victim's reuse revokes the family while Redis does not answer (paused: its data and run
// ID survive), the denials reach SQL but neither the entries nor the marker's removal
// reach Redis. Once Redis answers again, the denylist must not take its stale copy for
// complete: the thief's access token is denied at the next check (it used to stay valid
// for the rest of its life).
func TestDenialOutlivesAPartition(t *testing.T) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	own := testenv.OwnRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: own.Addr, ReadTimeout: 200 * time.Millisecond,
		WriteTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer rdb.Close()
	svc, err := member.New(db, member.NewRedisDenylist(rdb, member.NewSQLDenylist(db, nil)), secret,
		member.WithBcryptCost(bcrypt.MinCost))
	require.NoError(t, err)
	_, err = svc.SignUp(ctx, "alice", "correct horse")
	require.NoError(t, err)
	t1, t2, other, requireRevoked := stolenSession(t, svc)

	own.Pause(t)
	_, err = svc.Refresh(ctx, t1.RefreshToken) // the victim presents the old token
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	own.Unpause(t)
	require.Eventually(t, func() bool { return rdb.Ping(ctx).Err() == nil }, 10*time.Second, 50*time.Millisecond)

	requireRevoked(t2.AccessToken, true)
	requireRevoked(t1.AccessToken, true)
	requireRevoked(other.AccessToken, false)
}

// TestDenialOutlivesAPartitionWhileRebuilding: a check arriving while another rebuilds
// Redis after a denial Redis missed denies the thief's token or fails with 503; it must not
// answer from the stale copy (it did, between the rebuilding check's taking the job and
// its marking Redis incomplete). The partition is injected, as TestDenialOutlivesAPartition's
// paused Redis may still run the marker's removal once it resumes.
func TestDenialOutlivesAPartitionWhileRebuilding(t *testing.T) {
	svc, faults := faultyRedisService(t)
	victim, thief, other, requireRevoked := stolenSession(t, svc)
	jti := jtiOf(t, thief.AccessToken)
	faults.fail(true)
	_, err := svc.Refresh(ctx, victim.RefreshToken) // the victim presents the old token
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	faults.fail(false)
	faults.holdAt(func(cmd redis.Cmder) bool { // the rebuild marking Redis incomplete
		args := cmd.Args()
		return cmd.Name() == "set" && len(args) > 2 && args[1] == "commercekit:denied" && strings.HasPrefix(fmt.Sprint(args[2]), "building ")
	})
	var (
		revoked bool
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		revoked, err = svc.Revoked(ctx, jti)
	}()
	select { // the first check is rebuilding Redis
	case <-faults.held:
	case <-done:
		t.Fatalf("the check after the partition did not rebuild Redis: %v %v", revoked, err)
	}
	during, duringErr := svc.Revoked(ctx, jti)
	close(faults.release)
	<-done
	require.NoError(t, err)
	require.True(t, revoked)
	if duringErr != nil {
		require.ErrorIs(t, duringErr, errcode.ErrUnavailable)
	} else {
		require.True(t, during, "a check during the rebuild let the thief's revoked token through")
	}
	requireRevoked(thief.AccessToken, true)
	requireRevoked(victim.AccessToken, true)
	requireRevoked(other.AccessToken, false)
}

// stolenSession logs alice (signed up) in from two places and has a thief refresh the
// first session: it returns the victim's first pair, the thief's and the other session's,
// and a check of a token's revocation. The thief's token is checked once, so that a
// Redis denylist is built from SQL, as a running server's is.
func stolenSession(t *testing.T, svc *member.Service) (victim, thief, other member.Tokens, requireRevoked func(token string, want bool)) {
	var err error
	victim, err = svc.Login(ctx, "alice", "correct horse", "10.0.0.1")
	require.NoError(t, err)
	thief, err = svc.Refresh(ctx, victim.RefreshToken)
	require.NoError(t, err)
	other, err = svc.Login(ctx, "alice", "correct horse", "10.0.0.2")
	require.NoError(t, err)
	requireRevoked = func(token string, want bool) {
		t.Helper()
		got, err := svc.Revoked(ctx, jtiOf(t, token))
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	requireRevoked(thief.AccessToken, false)
	return victim, thief, other, requireRevoked
}

// faultyRedisService is a full-mode service whose Redis client has faults hooked, with
// alice signed up.
func faultyRedisService(t *testing.T) (*member.Service, *redisFaults) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	rdb := testenv.Redis(t)
	faults := &redisFaults{}
	rdb.AddHook(faults)
	svc, err := member.New(db, member.NewRedisDenylist(rdb, member.NewSQLDenylist(db, nil)), secret,
		member.WithBcryptCost(bcrypt.MinCost))
	require.NoError(t, err)
	_, err = svc.SignUp(ctx, "alice", "correct horse")
	require.NoError(t, err)
	return svc, faults
}

// TestDenialMissedDuringARebuild: a denial that misses Redis while a rebuild runs (after
// the rebuild read SQL) is not covered by it: the check after that rebuild rebuilds again
// and denies the token.
func TestDenialMissedDuringARebuild(t *testing.T) {
	svc, faults := faultyRedisService(t)
	var sessions [2]member.AccessClaims
	for i := range sessions {
		tok, err := svc.Login(ctx, "alice", "correct horse", "10.0.0.1")
		require.NoError(t, err)
		sessions[i] = (&env{clock: testclock.New(time.Now())}).claims(t, tok.AccessToken)
	}
	revoked := func(c member.AccessClaims) (bool, error) { return svc.Revoked(ctx, c.ID) }
	logout := func(c member.AccessClaims) error { return svc.Logout(ctx, c.ID, c.SessionID, c.ExpiresAt.Time) }
	_, err := revoked(sessions[1]) // Redis built from SQL, as a running server's is
	require.NoError(t, err)

	faults.fail(true) // the first logout reaches SQL only
	require.ErrorIs(t, logout(sessions[0]), errcode.ErrUnavailable)
	faults.fail(false)
	faults.holdAt(func(cmd redis.Cmder) bool { // the next check's rebuild read SQL: markBuilt waits
		return cmd.Name() == "evalsha" || cmd.Name() == "eval"
	})
	var (
		first    bool
		firstErr error
		done     = make(chan struct{})
	)
	go func() {
		defer close(done)
		first, firstErr = revoked(sessions[0])
	}()
	select {
	case <-faults.held:
	case <-done:
		t.Fatalf("the check did not rebuild Redis: %v %v", first, firstErr)
	}
	faults.fail(true) // meanwhile the second logout reaches SQL only
	require.ErrorIs(t, logout(sessions[1]), errcode.ErrUnavailable)
	faults.fail(false)
	close(faults.release)
	<-done
	require.NoError(t, firstErr)
	require.True(t, first)
	for _, c := range sessions {
		got, err := revoked(c)
		require.NoError(t, err)
		require.True(t, got, "session %s's token", c.SessionID)
	}
}

// redisFaults is a hook on the test's Redis client: while failing, the denylist's writes
// of entries and of the marker's removal fail as if Redis were unreachable; the first
// command holdAt's match accepts waits until release is closed (held is closed then).
type redisFaults struct {
	mu            sync.Mutex
	failing       bool
	match         func(redis.Cmder) bool
	held, release chan struct{}
}

func (f *redisFaults) fail(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing = on
}

func (f *redisFaults) holdAt(match func(redis.Cmder) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.match, f.held, f.release = match, make(chan struct{}), make(chan struct{})
}

func (f *redisFaults) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *redisFaults) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		f.mu.Lock()
		failing, hold, held, release := f.failing, f.match != nil && f.match(cmd), f.held, f.release
		if hold {
			f.match = nil
		}
		f.mu.Unlock()
		key := ""
		if args := cmd.Args(); len(args) > 1 {
			key = fmt.Sprint(args[1])
		}
		if failing && (cmd.Name() == "set" && strings.HasPrefix(key, "commercekit:denied:") || cmd.Name() == "del" && key == "commercekit:denied") {
			err := errors.New("injected: Redis unreachable")
			cmd.SetErr(err)
			return err
		}
		if hold {
			close(held)
			<-release
		}
		return next(ctx, cmd)
	}
}

func (f *redisFaults) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestRevocationSurvivesACrash: the database drops the connection as the victim's reuse
// writes the family's denials in the revoking transaction. The transaction rolls back:
// the session is not revoked and nothing is denied, so nothing is half done, and the
// victim's retry revokes the family and denies every live access token.
func TestRevocationSurvivesACrash(t *testing.T) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	deny := member.NewSQLDenylist(db, nil)
	svc, err := member.New(db, deny, secret, member.WithBcryptCost(bcrypt.MinCost))
	require.NoError(t, err)
	crashing, err := member.New(testenv.KillBefore(t, db, "INSERT INTO `member_denied_tokens`"), deny, secret,
		member.WithBcryptCost(bcrypt.MinCost))
	require.NoError(t, err)
	_, err = svc.SignUp(ctx, "alice", "correct horse")
	require.NoError(t, err)
	t1, err := svc.Login(ctx, "alice", "correct horse", "10.0.0.1")
	require.NoError(t, err)
	t2, err := svc.Refresh(ctx, t1.RefreshToken) // the thief's pair
	require.NoError(t, err)
	requireRevoked := func(want bool) {
		t.Helper()
		for _, tok := range []member.Tokens{t1, t2} {
			got, err := svc.Revoked(ctx, jtiOf(t, tok.AccessToken))
			require.NoError(t, err)
			require.Equal(t, want, got)
		}
	}

	_, err = crashing.Refresh(ctx, t1.RefreshToken) // the victim presents the old token
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	requireRevoked(false)
	var revokedAt int64
	require.NoError(t, db.NewRaw("SELECT revoked_at FROM member_sessions WHERE id = ?", t1.SessionID).Scan(ctx, &revokedAt))
	require.Zero(t, revokedAt, "the revocation rolled back with its denials")

	_, err = svc.Refresh(ctx, t1.RefreshToken) // the retry
	require.ErrorIs(t, err, member.ErrRefreshTokenReused)
	requireRevoked(true)
	_, err = svc.Refresh(ctx, t2.RefreshToken)
	require.ErrorIs(t, err, member.ErrInvalidRefreshToken, "the family is revoked")
}
