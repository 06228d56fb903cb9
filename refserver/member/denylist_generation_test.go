package member_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"golang.org/x/crypto/bcrypt"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/refserver/member"
)

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
// works, must deny the thief's token once its generation check has run: at once with an
// interval of 0, after the default interval otherwise (by b's clock). It used to answer
// "not revoked" from the stale copy for as long as the partition lasted.
func TestDenialMissedByOneServerReachesTheOthers(t *testing.T) {
	clock := testclock.New(time.Now())
	for _, c := range []struct {
		name  string
		opts  []member.RedisDenylistOption
		after time.Duration // by b's clock, from the revocation to b's check
	}{
		{"interval 0", []member.RedisDenylistOption{member.WithGenerationCheck(0)}, 0},
		{"default interval", []member.RedisDenylistOption{member.WithDenylistClock(clock.Now)}, member.DefaultGenerationCheck},
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

// TestGenerationReadFailsClosed: while the SQL generation cannot be read (the table is
// locked: the read waits past the check's timeout), server b's check fails with 503 rather
// than answer "not revoked" from a Redis copy that misses a denial; once SQL answers
// again, b's check denies the thief's token.
func TestGenerationReadFailsClosed(t *testing.T) {
	a, b, faults, victim, thief, other, db := partitionedServers(t, member.WithGenerationCheck(0))
	faults.fail(true)
	_, err := a.Refresh(ctx, victim.RefreshToken)
	require.ErrorIs(t, err, errcode.ErrUnavailable)

	lock, err := db.Conn(ctx)
	require.NoError(t, err)
	defer lock.Close()
	_, err = lock.ExecContext(ctx, "LOCK TABLES member_denylist_generation WRITE")
	require.NoError(t, err)
	_, err = b.Revoked(ctx, jtiOf(t, thief.AccessToken))
	require.ErrorIs(t, err, errcode.ErrUnavailable, "the generation could not be read")
	_, err = lock.ExecContext(ctx, "UNLOCK TABLES")
	require.NoError(t, err)

	requireRevokedOn(t, b, true, thief, victim)
	requireRevokedOn(t, b, false, other)
}

// TestMarkerWithoutGeneration: the marker of generation 0 is the earlier version's ("ok
// <run ID>", which a rolling deploy still writes): it is kept while no denial has bumped
// the generation, and rebuilt once one has (then it carries the generation). On both
// dialects (the bump is an upsert), the second bump updating the first's row.
func TestMarkerWithoutGeneration(t *testing.T) {
	for _, backend := range []struct {
		name string
		open func(testing.TB) *bun.DB
	}{{"mysql", testenv.MySQL}, {"sqlite", testenv.SQLite}} {
		t.Run(backend.name, func(t *testing.T) {
			db := backend.open(t)
			require.NoError(t, member.CreateSchema(ctx, db))
			rdb := testenv.Redis(t)
			faults := &redisFaults{}
			rdb.AddHook(faults)
			records := member.NewSQLDenylist(db, nil)
			check := func(jti string) bool { // by another server: its own misses are not counted
				t.Helper()
				denied, err := member.NewRedisDenylist(rdb, records, member.WithGenerationCheck(0)).Denied(ctx, jti)
				require.NoError(t, err)
				return denied
			}
			require.False(t, check("warm-up"))
			const key = "commercekit:denied"
			old := rdb.Get(ctx, key).Val()
			require.Regexp(t, `^ok [0-9a-f]{40}$`, old, "generation 0: the earlier version's marker")
			require.False(t, check("not-denied"))
			require.Equal(t, old, rdb.Get(ctx, key).Val(), "kept: no rebuild")

			faults.fail(true) // two denials miss Redis, marker and all
			d := member.NewRedisDenylist(rdb, records)
			for _, jti := range []string{"stolen-1", "stolen-2"} {
				require.ErrorIs(t, d.Deny(ctx, jti, time.Now().Add(time.Hour)), errcode.ErrUnavailable)
			}
			faults.fail(false)
			require.Equal(t, old, rdb.Get(ctx, key).Val())
			require.True(t, check("stolen-1"))
			require.True(t, check("stolen-2"))
			require.False(t, check("not-denied"))
			require.Equal(t, old+" 2", rdb.Get(ctx, key).Val())
		})
	}
}

// statements counts the statements sent through a bun.DB.
type statements struct{ n atomic.Int64 }

func (s *statements) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	s.n.Add(1)
	return ctx
}

func (s *statements) AfterQuery(context.Context, *bun.QueryEvent) {}

// TestGenerationCheckIsCached: within the interval, a check sends no SQL statement; after
// it, one check reads the generation again.
func TestGenerationCheckIsCached(t *testing.T) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	stmts := &statements{}
	clock := testclock.New(time.Now())
	d := member.NewRedisDenylist(testenv.Redis(t), member.NewSQLDenylist(db.WithQueryHook(stmts), nil),
		member.WithDenylistClock(clock.Now))
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
	_, err := d.Denied(ctx, "warm-up") // the rebuild, and the first read
	require.NoError(t, err)
	clock.Advance(member.DefaultGenerationCheck - time.Millisecond)
	require.Zero(t, checks(), "within the interval")
	clock.Advance(time.Millisecond)
	require.EqualValues(t, 1, checks(), "the interval has passed")
}
