package member_test

import (
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/refserver/member"
)

// partitionedServers are two servers (member services) on the same MariaDB and the same
// Redis: a's Redis client has faults hooked (the partial partition: a's commands fail, b's
// do not), b's denylist takes bOpts. Alice is signed up and her first session stolen; b
// has checked the thief's token (its Redis copy is built, as a running server's is).
func partitionedServers(t *testing.T, bOpts ...member.RedisDenylistOption) (a, b *member.Service, faults *redisFaults,
	victim, thief, other member.Tokens) {
	db := testenv.MySQL(t)
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
	b, err = member.New(db, member.NewRedisDenylist(rdbB, records, bOpts...), secret, member.WithBcryptCost(bcrypt.MinCost))
	require.NoError(t, err)
	_, err = a.SignUp(ctx, "alice", "correct horse")
	require.NoError(t, err)
	victim, thief, other, _ = stolenSession(t, a)
	revoked, err := b.Revoked(ctx, jtiOf(t, thief.AccessToken))
	require.NoError(t, err)
	require.False(t, revoked)
	return a, b, faults, victim, thief, other
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
// works, must deny the thief's token once its generation check has run (at once with an
// interval of 0); it used to answer "not revoked" from the stale copy for as long as the
// partition lasted.
func TestDenialMissedByOneServerReachesTheOthers(t *testing.T) {
	a, b, faults, victim, thief, other := partitionedServers(t, member.WithGenerationCheck(0))
	faults.fail(true) // for the rest of the test: the partition lasts
	_, err := a.Refresh(ctx, victim.RefreshToken)
	require.ErrorIs(t, err, errcode.ErrUnavailable)

	requireRevokedOn(t, b, true, thief, victim)
	requireRevokedOn(t, b, false, other)
}
