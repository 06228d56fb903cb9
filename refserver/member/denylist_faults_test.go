package member_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
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
		return cmd.Name() == "set" && len(args) > 2 && args[1] == "commercekit:denied" && strings.HasPrefix(fmt.Sprint(args[2]), "rebuilding ")
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
	// The next check's rebuild read SQL: markBuilt waits.
	firstAnswer := holdMarkBuilt(t, faults, func() (bool, error) { return revoked(sessions[0]) })
	faults.fail(true) // meanwhile the second logout reaches SQL only
	require.ErrorIs(t, logout(sessions[1]), errcode.ErrUnavailable)
	faults.fail(false)
	close(faults.release)
	first, firstErr := firstAnswer()
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
		if failing && injected(cmd) {
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

// ProcessPipelineHook fails a whole pipeline that writes a denial, as the partition would.
func (f *redisFaults) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		f.mu.Lock()
		failing := f.failing
		f.mu.Unlock()
		if failing && slices.ContainsFunc(cmds, injected) {
			err := errors.New("injected: Redis unreachable")
			for _, cmd := range cmds {
				cmd.SetErr(err)
			}
			return err
		}
		return next(ctx, cmds)
	}
}

// injected reports whether the faults fail cmd: the write of a denial, or the removal of
// the marker.
func injected(cmd redis.Cmder) bool {
	key := ""
	if args := cmd.Args(); len(args) > 1 {
		key = fmt.Sprint(args[1])
	}
	return cmd.Name() == "set" && strings.HasPrefix(key, "commercekit:denied:") || cmd.Name() == "del" && key == "commercekit:denied"
}

// TestRevocationSurvivesACrash: the database drops the connection as the victim's reuse
// writes the family's denials in the revoking transaction. The transaction rolls back:
// the session is not revoked and nothing is denied, so nothing is half done, and the
// victim's retry revokes the family and denies every live access token.
func TestRevocationSurvivesACrash(t *testing.T) {
	for _, mode := range []string{"sql", "redis"} {
		t.Run(mode, func(t *testing.T) {
			db := testenv.MySQL(t)
			require.NoError(t, member.CreateSchema(ctx, db))
			var deny member.Denylist = member.NewSQLDenylist(db, nil)
			if mode == "redis" {
				deny = member.NewRedisDenylist(testenv.Redis(t), member.NewSQLDenylist(db, nil))
			}
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
			rows := func(table string) int64 {
				t.Helper()
				n, err := db.NewSelect().Table(table).Count(ctx)
				require.NoError(t, err)
				return n
			}

			_, err = crashing.Refresh(ctx, t1.RefreshToken) // the victim presents the old token
			require.ErrorIs(t, err, errcode.ErrUnavailable)
			requireRevoked(false)
			var revokedAt int64
			require.NoError(t, db.NewRaw("SELECT revoked_at FROM member_sessions WHERE id = ?", t1.SessionID).Scan(ctx, &revokedAt))
			require.Zero(t, revokedAt, "the revocation rolled back with its denials")
			require.Zero(t, rows("member_denied_tokens"))
			require.Zero(t, rows("member_denials_unpublished"))

			_, err = svc.Refresh(ctx, t1.RefreshToken) // the retry
			require.ErrorIs(t, err, member.ErrRefreshTokenReused)
			requireRevoked(true)
			_, err = svc.Refresh(ctx, t2.RefreshToken)
			require.ErrorIs(t, err, member.ErrInvalidRefreshToken, "the family is revoked")
			require.EqualValues(t, 2, rows("member_denied_tokens"))
			require.Zero(t, rows("member_denials_unpublished"), "published (redis), or never listed (sql)")
		})
	}
}

// partitionedServers are two servers (member services) on the same MariaDB and the same
// Redis: a's Redis client has faults hooked (the partial partition: a's commands fail, b's
// do not), b's denylist takes bOpts. Alice is signed up and her first session stolen; b
// has checked the thief's token (its Redis copy is built, as a running server's is).
func partitionedServers(t *testing.T, bOpts ...member.RedisDenylistOption) (a, b *member.Service, faults *redisFaults,
	victim, thief, other member.Tokens, db *bun.DB) {
	db = testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	rdbA := testenv.Redis(t)
	opts := *rdbA.Options()
	rdbB := redis.NewClient(&opts) // the same Redis database, another client
	t.Cleanup(func() { rdbB.Close() })
	faults = &redisFaults{}
	rdbA.AddHook(faults)
	records := member.NewSQLDenylist(db, nil)
	var err error
	a, err = member.New(db, member.NewRedisDenylist(rdbA, records), secret, member.WithBcryptCost(bcrypt.MinCost))
	require.NoError(t, err)
	b, err = member.New(db, member.NewRedisDenylist(rdbB, records, bOpts...), secret, member.WithBcryptCost(bcrypt.MinCost),
		member.WithCheckTimeout(2*time.Second))
	require.NoError(t, err)
	_, err = a.SignUp(ctx, "alice", "correct horse")
	require.NoError(t, err)
	victim, thief, other, _ = stolenSession(t, a)
	revoked, err := b.Revoked(ctx, jtiOf(t, thief.AccessToken))
	require.NoError(t, err)
	require.False(t, revoked)
	return a, b, faults, victim, thief, other, db
}

// requireRevokedOn checks the tokens' revocation on svc.
func requireRevokedOn(t *testing.T, svc *member.Service, want bool, tokens ...member.Tokens) {
	t.Helper()
	for _, tok := range tokens {
		got, err := svc.Revoked(ctx, jtiOf(t, tok.AccessToken))
		require.NoError(t, err)
		require.Equal(t, want, got, "session %s", tok.SessionID)
	}
}

// TestDenialMissedByOneServerReachesTheOthers: the victim's reuse reaches server a, whose
// Redis is unreachable from a alone (a partial partition): the family's denials reach SQL,
// neither their Redis entries nor the marker's removal reach Redis. Server b, whose Redis
// works, must deny the thief's token once its publish check has run: at once with an
// interval of 0, after the default interval otherwise (by b's clock). It used to answer
// "not revoked" from the stale copy for as long as the partition lasted.
func TestDenialMissedByOneServerReachesTheOthers(t *testing.T) {
	clock := testclock.New(time.Now())
	for _, c := range []struct {
		name  string
		opts  []member.RedisDenylistOption
		after time.Duration // by b's clock, from the revocation to b's check
	}{
		{"interval 0", []member.RedisDenylistOption{member.WithPublishCheck(0)}, 0},
		{"default interval", []member.RedisDenylistOption{member.WithDenylistClock(clock.Now)}, member.DefaultPublishCheck},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b, faults, victim, thief, other, _ := partitionedServers(t, c.opts...)
			faults.fail(true) // for the rest of the test: the partition lasts
			_, err := a.Refresh(ctx, victim.RefreshToken)
			require.ErrorIs(t, err, errcode.ErrUnavailable)

			clock.Advance(c.after)
			requireRevokedOn(t, b, true, thief, victim)
			requireRevokedOn(t, b, false, other)
		})
	}
}

// TestPublishFailsClosed: while the unpublished denials cannot be read (the table is
// locked: the read waits past the check's timeout), server b's check fails with 503 rather
// than answer "not revoked" from a Redis copy that misses a denial; once SQL answers
// again, b's check denies the thief's token.
func TestPublishFailsClosed(t *testing.T) {
	a, b, faults, victim, thief, other, db := partitionedServers(t, member.WithPublishCheck(0))
	faults.fail(true)
	_, err := a.Refresh(ctx, victim.RefreshToken)
	require.ErrorIs(t, err, errcode.ErrUnavailable)

	unlock := lockUnpublished(t, db)
	_, err = b.Revoked(ctx, jtiOf(t, thief.AccessToken))
	require.ErrorIs(t, err, errcode.ErrUnavailable, "the unpublished denials could not be read")
	unlock()

	requireRevokedOn(t, b, true, thief, victim)
	requireRevokedOn(t, b, false, other)
}

// TestMissedDenialsArePublished: denials that missed Redis, marker and all, reach it
// through another server's check, without a rebuild (the marker stays), and leave the
// unpublished list; on both dialects.
func TestMissedDenialsArePublished(t *testing.T) {
	for name, open := range map[string]func(testing.TB) *bun.DB{"mysql": testenv.MySQL, "sqlite": testenv.SQLite} {
		t.Run(name, func(t *testing.T) {
			db := open(t)
			require.NoError(t, member.CreateSchema(ctx, db))
			rdb := testenv.Redis(t)
			faults := &redisFaults{}
			rdb.AddHook(faults)
			records := member.NewSQLDenylist(db, nil)
			other := member.NewRedisDenylist(rdb, records, member.WithPublishCheck(0)) // another server
			check := func(jti string) bool {
				t.Helper()
				denied, err := other.Denied(ctx, jti)
				require.NoError(t, err)
				return denied
			}
			require.False(t, check("warm-up"))
			const key = "commercekit:denied"
			built := rdb.Get(ctx, key).Val()

			faults.fail(true) // two denials miss Redis, marker and all
			d := member.NewRedisDenylist(rdb, records)
			for _, jti := range []string{"stolen-1", "stolen-2"} {
				require.ErrorIs(t, d.Deny(ctx, jti, time.Now().Add(time.Hour)), errcode.ErrUnavailable)
			}
			faults.fail(false)
			unpublished := func() int64 {
				n, err := db.NewSelect().Table("member_denials_unpublished").Count(ctx)
				require.NoError(t, err)
				return n
			}
			require.EqualValues(t, 2, unpublished())
			require.True(t, check("stolen-1"))
			require.True(t, check("stolen-2"))
			require.False(t, check("not-denied"))
			require.Equal(t, built, rdb.Get(ctx, key).Val(), "published, not rebuilt")
			require.Zero(t, unpublished())
			require.NoError(t, d.Deny(ctx, "denied", time.Now().Add(time.Hour)))
			require.Zero(t, unpublished(), "a denial written into Redis leaves the list")
		})
	}
}

// lockUnpublished locks member_denials_unpublished in db (MySQL) against every other
// connection, reads included, until unlock is called.
func lockUnpublished(t *testing.T, db *bun.DB) (unlock func()) {
	lock, err := db.Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { lock.Close() })
	_, err = lock.ExecContext(ctx, "LOCK TABLES member_denials_unpublished WRITE")
	require.NoError(t, err)
	return func() {
		_, err := lock.ExecContext(ctx, "UNLOCK TABLES")
		require.NoError(t, err)
	}
}

// countedDenylist is a RedisDenylist on MySQL whose SQL statements are counted, timing its
// publish check by clock (the default interval), built from SQL.
func countedDenylist(t *testing.T) (*bun.DB, *statements, *testclock.Clock, *member.RedisDenylist) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	stmts := &statements{}
	clock := testclock.New(time.Now())
	d := member.NewRedisDenylist(testenv.Redis(t), member.NewSQLDenylist(db.WithQueryHook(stmts), nil),
		member.WithDenylistClock(clock.Now))
	_, err := d.Denied(ctx, "warm-up") // the rebuild, and the first read
	require.NoError(t, err)
	return db, stmts, clock, d
}

// statements counts the statements sent through a bun.DB.
type statements struct{ n atomic.Int64 }

func (s *statements) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	s.n.Add(1)
	return ctx
}

func (s *statements) AfterQuery(context.Context, *bun.QueryEvent) {}

// TestPublishCheckIsCached: within the interval, a check sends no SQL statement; after
// it, one check reads the unpublished denials again (none: one statement).
func TestPublishCheckIsCached(t *testing.T) {
	_, stmts, clock, d := countedDenylist(t)
	checks := func() int64 {
		t.Helper()
		before := stmts.n.Load()
		for range 100 {
			denied, err := d.Denied(ctx, "not-denied")
			require.NoError(t, err)
			require.False(t, denied)
		}
		return stmts.n.Load() - before
	}
	clock.Advance(member.DefaultPublishCheck - time.Millisecond)
	require.Zero(t, checks(), "within the interval")
	clock.Advance(time.Millisecond)
	require.EqualValues(t, 1, checks(), "the interval has passed")
}

// TestPublishOneAtATime: checks that find the last publishing too old while the next one
// waits (the table locked) wait for it rather than run their own.
func TestPublishOneAtATime(t *testing.T) {
	db, stmts, clock, d := countedDenylist(t)
	unlock := lockUnpublished(t, db)
	clock.Advance(member.DefaultPublishCheck)
	before := stmts.n.Load()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			denied, err := d.Denied(ctx, "not-denied")
			assert.NoError(t, err)
			assert.False(t, denied)
		}()
	}
	require.Eventually(t, func() bool { return stmts.n.Load() > before }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // the other checks arrive while the read waits
	unlock()
	wg.Wait()
	require.EqualValues(t, 1, stmts.n.Load()-before, "one read of the unpublished denials")
}

// TestPublishOutlivesTheCheckThatStartedIt: the check that starts a publishing giving up
// (its client gone) fails only itself; a check waiting for the same one gets its answer.
func TestPublishOutlivesTheCheckThatStartedIt(t *testing.T) {
	db, stmts, clock, d := countedDenylist(t)
	unlock := lockUnpublished(t, db)
	clock.Advance(member.DefaultPublishCheck)
	before := stmts.n.Load()
	first, cancel := context.WithCancel(ctx)
	firstErr := make(chan error, 1)
	go func() {
		_, err := d.Denied(first, "not-denied")
		firstErr <- err
	}()
	require.Eventually(t, func() bool { return stmts.n.Load() > before }, 5*time.Second, 10*time.Millisecond)
	second := make(chan error, 1)
	go func() {
		denied, err := d.Denied(ctx, "not-denied")
		assert.False(t, denied)
		second <- err
	}()
	time.Sleep(100 * time.Millisecond) // the second check joins the read under way
	cancel()
	require.ErrorIs(t, <-firstErr, context.Canceled)
	unlock()
	require.NoError(t, <-second)
	require.EqualValues(t, 1, stmts.n.Load()-before, "one read of the unpublished denials")
}

// unbuiltServers are the denylists of two servers on the same MariaDB and Redis
// database; server 1's Redis client has faults hooked. A denial ("stolen") is on record
// only, and Redis, built before it, has lost its marker: the next check on either server
// rebuilds Redis.
func unbuiltServers(t *testing.T) (s1, s2 *member.RedisDenylist, faults *redisFaults, rdb2 *redis.Client) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	rdb1 := testenv.Redis(t)
	opts := *rdb1.Options()
	rdb2 = redis.NewClient(&opts) // the same Redis database, another server's client
	t.Cleanup(func() { rdb2.Close() })
	faults = &redisFaults{}
	rdb1.AddHook(faults)
	records := member.NewSQLDenylist(db, nil)
	s1 = member.NewRedisDenylist(rdb1, records, member.WithPublishCheck(0))
	s2 = member.NewRedisDenylist(rdb2, records, member.WithPublishCheck(0))
	_, err := s2.Denied(ctx, "warm-up")
	require.NoError(t, err)
	require.NoError(t, records.Deny(ctx, "stolen", time.Now().Add(time.Hour)))
	require.NoError(t, rdb2.Del(ctx, "commercekit:denied").Err())
	return s1, s2, faults, rdb2
}

// holdMarkBuilt starts check, on the denylist whose client has faults hooked, and returns
// once its rebuild is about to mark Redis built (held there until faults.release is
// closed), with a wait for the check's answer.
func holdMarkBuilt(t *testing.T, faults *redisFaults, check func() (bool, error)) (answer func() (bool, error)) {
	faults.holdAt(func(cmd redis.Cmder) bool { return cmd.Name() == "evalsha" || cmd.Name() == "eval" })
	var (
		got  bool
		err  error
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		got, err = check()
	}()
	select {
	case <-faults.held:
	case <-done:
		t.Fatalf("the check did not rebuild Redis: %v %v", got, err)
	}
	return func() (bool, error) {
		<-done
		return got, err
	}
}

// TestRebuildNotCutShortByAnotherServer: a check on one server that finds another
// server's rebuild under way answers 503 and leaves that rebuild alone. It used to start
// its own, taking the marker over, so that the first failed at its end: with checks
// arriving on several servers faster than one rebuild runs (every server finds the marker
// gone at once), no rebuild ever completed and every check failed, for as long as the
// traffic lasted.
func TestRebuildNotCutShortByAnotherServer(t *testing.T) {
	s1, s2, faults, rdb2 := unbuiltServers(t)
	first := holdMarkBuilt(t, faults, func() (bool, error) { return s1.Denied(ctx, "stolen") })
	token := rdb2.Get(ctx, "commercekit:denied").Val()
	require.True(t, strings.HasPrefix(token, "rebuilding "), token)
	require.Positive(t, rdb2.PTTL(ctx, "commercekit:denied").Val(), "it expires should server 1 die mid-way")
	_, err := s2.Denied(ctx, "stolen")
	require.ErrorIs(t, err, errcode.ErrUnavailable, "server 2 waits for server 1's rebuild")
	require.Equal(t, token, rdb2.Get(ctx, "commercekit:denied").Val(), "server 1's rebuild is left alone")
	close(faults.release)
	denied, err := first()
	require.NoError(t, err, "server 1's rebuild completes")
	require.True(t, denied)
	denied, err = s2.Denied(ctx, "stolen")
	require.NoError(t, err)
	require.True(t, denied)
}

// TestFailedRebuildLetsOthersStart: a rebuild that fails (its check gave up before
// marking Redis built) deletes its marker, so that the next check, on another server,
// rebuilds Redis at once rather than wait for that marker to expire.
func TestFailedRebuildLetsOthersStart(t *testing.T) {
	s1, s2, faults, rdb2 := unbuiltServers(t)
	cctx, cancel := context.WithCancel(ctx)
	first := holdMarkBuilt(t, faults, func() (bool, error) { return s1.Denied(cctx, "stolen") })
	cancel()
	close(faults.release)
	_, err := first()
	require.ErrorIs(t, err, errcode.ErrUnavailable)
	require.Zero(t, rdb2.Exists(ctx, "commercekit:denied").Val(), "the failed rebuild's marker is gone")
	denied, err := s2.Denied(ctx, "stolen")
	require.NoError(t, err)
	require.True(t, denied)
}

// TestEarlierVersionsRebuildMarker: the earlier version's marker of a rebuild under way
// ("building <token>") never expires, and its server may have died mid-way (during a
// rolling deploy): a check takes it over rather than wait for it, which would be forever.
func TestEarlierVersionsRebuildMarker(t *testing.T) {
	_, s2, _, rdb2 := unbuiltServers(t)
	require.NoError(t, rdb2.Set(ctx, "commercekit:denied", "building 0b8e7a3c-earlier-version", 0).Err())
	denied, err := s2.Denied(ctx, "stolen")
	require.NoError(t, err)
	require.True(t, denied)
}

// TestDenialOfAServerThatDiedAfterTheRevocation: the victim's reuse reaches server a,
// which revokes the family and dies before any of its denials reaches Redis: no entry, no
// removal of the marker. Server b, on the same Redis and SQL,
// must deny the thief's token once its publish check has run (at once with an interval
// of 0): the revocation left its denials unpublished on record, and b publishes them.
func TestDenialOfAServerThatDiedAfterTheRevocation(t *testing.T) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	records := member.NewSQLDenylist(db, nil)
	a, err := member.New(db, member.Died(member.NewRedisDenylist(testenv.Redis(t), records)), secret,
		member.WithBcryptCost(bcrypt.MinCost))
	require.NoError(t, err)
	b, err := member.New(db, member.NewRedisDenylist(testenv.Redis(t), records, member.WithPublishCheck(0)), secret,
		member.WithBcryptCost(bcrypt.MinCost))
	require.NoError(t, err)
	_, err = a.SignUp(ctx, "alice", "correct horse")
	require.NoError(t, err)
	victim, thief, other, _ := stolenSession(t, b)
	requireRevokedOn(t, b, false, thief)

	_, err = a.Refresh(ctx, victim.RefreshToken) // the victim presents the old token to a
	require.ErrorIs(t, err, member.ErrDied)

	requireRevokedOn(t, b, true, thief, victim)
	requireRevokedOn(t, b, false, other)
}

// TestPublishMoreThanABatch: more denials left unpublished than one batch of publish
// (500), some of them expired, all reach Redis through one check of another server,
// without a rebuild; the expired ones get no entry, and the list ends empty.
func TestPublishMoreThanABatch(t *testing.T) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	rdb := testenv.Redis(t)
	d := member.NewRedisDenylist(rdb, member.NewSQLDenylist(db, nil), member.WithPublishCheck(0))
	denied, err := d.Denied(ctx, "warm-up")
	require.NoError(t, err)
	require.False(t, denied)
	const key = "commercekit:denied"
	built := rdb.Get(ctx, key).Val()

	// Denials whose servers died after their revocations committed: on record and
	// unpublished, not in Redis.
	type row struct {
		JTI       string `bun:"jti"`
		ExpiresAt int64  `bun:"expires_at"`
	}
	const live, expired = 1201, 7
	var rows []row
	for i := range live {
		rows = append(rows, row{fmt.Sprintf("stolen-%d", i), time.Now().Add(time.Hour).UnixMicro()})
	}
	for i := range expired {
		rows = append(rows, row{fmt.Sprintf("expired-%d", i), time.Now().Add(-time.Minute).UnixMicro()})
	}
	for _, table := range []string{"member_denied_tokens", "member_denials_unpublished"} {
		_, err := db.NewInsert().Model(&rows).ModelTableExpr(table).Exec(ctx)
		require.NoError(t, err)
	}

	for _, jti := range []string{"stolen-0", "stolen-600", fmt.Sprintf("stolen-%d", live-1)} {
		denied, err := d.Denied(ctx, jti)
		require.NoError(t, err)
		require.True(t, denied, jti)
	}
	n, err := db.NewSelect().Table("member_denials_unpublished").Count(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "every batch published and taken off the list")
	keys, err := rdb.Keys(ctx, key+":*").Result()
	require.NoError(t, err)
	require.Len(t, keys, live, "an entry for each live denial, none for the expired ones")
	require.Equal(t, built, rdb.Get(ctx, key).Val(), "published, not rebuilt")
}

// TestPublishRacingDenials: denials of the same tokens, some failing to reach Redis (a
// partitioned from it, marker and all), others written by another server (c, which takes
// them off the unpublished list) while a third (b, publishing at every check) publishes
// and checks. Every check after a denial returned, on b, denies its token, whichever
// server wrote it, and no check fails; at the end the list is empty and Redis was never
// rebuilt.
func TestPublishRacingDenials(t *testing.T) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	rdbA := testenv.Redis(t)
	client := func() *redis.Client {
		opts := *rdbA.Options()
		rdb := redis.NewClient(&opts) // the same Redis database, another client
		t.Cleanup(func() { rdb.Close() })
		return rdb
	}
	faults := &redisFaults{}
	rdbA.AddHook(faults)
	records := member.NewSQLDenylist(db, nil)
	a, c := member.NewRedisDenylist(rdbA, records), member.NewRedisDenylist(client(), records)
	rdbB := client()
	b := member.NewRedisDenylist(rdbB, records, member.WithPublishCheck(0))
	denied, err := b.Denied(ctx, "warm-up")
	require.NoError(t, err)
	require.False(t, denied)
	const key = "commercekit:denied"
	built := rdbB.Get(ctx, key).Val()
	faults.fail(true)

	const tokens = 60
	until := time.Now().Add(time.Hour)
	var wg sync.WaitGroup
	checkAfter := func(jti string, deny func() error) {
		defer wg.Done()
		_ = deny() // a's fail (ErrUnavailable), c's succeed: checked below
		denied, err := b.Denied(ctx, jti)
		assert.NoError(t, err, jti)
		assert.True(t, denied, jti)
	}
	for i := range tokens {
		jti := fmt.Sprintf("stolen-%d", i)
		wg.Add(2)
		go checkAfter(jti, func() error {
			err := a.Deny(ctx, jti, until)
			assert.ErrorIs(t, err, errcode.ErrUnavailable)
			return err
		})
		go checkAfter(jti, func() error {
			err := c.Deny(ctx, jti, until)
			assert.NoError(t, err)
			return err
		})
	}
	wg.Wait()
	for i := range tokens {
		denied, err := b.Denied(ctx, fmt.Sprintf("stolen-%d", i))
		require.NoError(t, err)
		require.True(t, denied)
	}
	n, err := db.NewSelect().Table("member_denials_unpublished").Count(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Equal(t, built, rdbB.Get(ctx, key).Val(), "published, not rebuilt")
}

// TestPublishRacingRevocations: revocations writing several denials each (overlapping,
// in random order, their servers dying before Redis) while two servers publish at every
// check. No check fails (publish's DELETE does not deadlock with them), and every
// denial ends in Redis, the list empty.
func TestPublishRacingRevocations(t *testing.T) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	rdb := testenv.Redis(t)
	records := member.NewSQLDenylist(db, nil)
	servers := []*member.RedisDenylist{
		member.NewRedisDenylist(rdb, records, member.WithPublishCheck(0)),
		member.NewRedisDenylist(rdb, records, member.WithPublishCheck(0)),
	}
	for _, s := range servers {
		_, err := s.Denied(ctx, "warm-up")
		require.NoError(t, err)
	}
	until := time.Now().Add(time.Hour)
	const pool = 80
	var (
		revoking         sync.WaitGroup
		done             = make(chan struct{})
		checks, failures atomic.Int64
		checking         sync.WaitGroup
	)
	for _, s := range servers {
		for range 3 {
			checking.Add(1)
			go func() {
				defer checking.Done()
				for {
					select {
					case <-done:
						return
					default:
					}
					checks.Add(1)
					if _, err := s.Denied(ctx, "not-denied"); err != nil {
						failures.Add(1)
						t.Log(err)
					}
				}
			}()
		}
	}
	for g := range 6 {
		revoking.Add(1)
		go func() {
			defer revoking.Done()
			for i := range 15 {
				jtis := make([]string, 5)
				for k := range jtis {
					jtis[k] = fmt.Sprintf("stolen-%d", (g*7+i*13+k*29)%pool)
				}
				assert.NoError(t, member.RecordUnpublished(ctx, db, until, jtis...))
			}
		}()
	}
	revoking.Wait()
	close(done)
	checking.Wait()
	t.Logf("%d checks", checks.Load())
	require.Zero(t, failures.Load(), "checks failed")
	_, err := servers[0].Denied(ctx, "not-denied")
	require.NoError(t, err)
	n, err := db.NewSelect().Table("member_denials_unpublished").Count(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	var recorded []string
	require.NoError(t, db.NewSelect().Table("member_denied_tokens").Column("jti").Scan(ctx, &recorded))
	for _, jti := range recorded {
		require.EqualValues(t, 1, rdb.Exists(ctx, "commercekit:denied:"+jti).Val(), jti)
	}
}

// TestDiedServersDenialWithinTheInterval: a denial whose server died after its
// revocation committed is denied by the first check once the default publish interval
// has passed since this denylist last published, not before (no SQL statement in
// between).
func TestDiedServersDenialWithinTheInterval(t *testing.T) {
	db, _, clock, d := countedDenylist(t)
	require.NoError(t, member.RecordUnpublished(ctx, db, time.Now().Add(time.Hour), "stolen"))
	check := func() bool {
		t.Helper()
		denied, err := d.Denied(ctx, "stolen")
		require.NoError(t, err)
		return denied
	}
	clock.Advance(member.DefaultPublishCheck - time.Millisecond)
	require.False(t, check(), "within the interval, answered from Redis")
	clock.Advance(time.Millisecond)
	require.True(t, check(), "the interval has passed")
}
