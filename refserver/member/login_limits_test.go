package member_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/refserver/member"
)

// TestConcurrentGuessesLimited: guesses sent at once are limited like guesses sent one
// after the other: exactly the burst of them reach the password check (a limit checked
// before the slow hash and charged after it would let them all through).
func TestConcurrentGuessesLimited(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		_, err := e.svc.SignUp(ctx, "alice", "correct horse")
		require.NoError(t, err)
		const n = 24
		var (
			wg          sync.WaitGroup
			mu          sync.Mutex
			bad, limits int
		)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := e.svc.Login(ctx, "alice", "guess-"+string(rune('a'+i)), "10.1.0."+string(rune('1'+i%9)))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case errorsIsAny(err, member.ErrBadCredentials):
					bad++
				case errorsIsAny(err, member.ErrTooManyAttempts):
					limits++
				default:
					t.Errorf("login: %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		assert.Equal(t, 3, bad, "guesses that reached the password check")
		assert.Equal(t, n-3, limits)
		_, err = e.svc.Login(ctx, "alice", "correct horse", "10.1.1.1")
		assert.ErrorIs(t, err, member.ErrTooManyAttempts, "the account is still limited")
	}, member.WithLoginLimits(3, 100, time.Hour))
}

// TestLoginIDVariantsShareTheLimit: a login ID the database would match with another
// spelling (MySQL's PAD SPACE collations ignore trailing spaces) cannot be used to get a
// fresh per-login-ID budget: a login ID no member can have is refused before any check.
func TestLoginIDVariantsShareTheLimit(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		_, err := e.svc.SignUp(ctx, "alice", "correct horse")
		require.NoError(t, err)
		for i := range 2 {
			_, err := e.svc.Login(ctx, "alice", "guess-guess", "10.2.0.1")
			require.ErrorIs(t, err, member.ErrBadCredentials, i)
		}
		for _, variant := range []string{"alice ", "alice" + strings.Repeat(" ", 10), "alice\x00", "alice\t", "al ice"} {
			_, err := e.svc.Login(ctx, variant, "correct horse", "10.2.0.2")
			require.Error(t, err, "%q must not log alice in", variant)
			assert.ErrorIs(t, err, member.ErrInvalidRequest, "%q", variant)
		}
		_, err = e.svc.Login(ctx, "alice", "correct horse", "10.2.0.3")
		require.ErrorIs(t, err, member.ErrTooManyAttempts)
	}, member.WithLoginLimits(2, 100, time.Hour))
}

// TestLimitsSharedByInstances: two server instances sharing a RedisLimiter share the
// budgets: guesses spread over both reach the password check exactly the burst of times,
// where two MemoryLimiters would have let through twice as many.
func TestLimitsSharedByInstances(t *testing.T) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	rdb := testenv.Redis(t)
	var instances [2]*member.Service
	for i := range instances {
		instances[i] = testkit.Must(member.New(db, member.NewRedisDenylist(rdb), secret, member.WithBcryptCost(bcrypt.MinCost),
			member.WithLimiter(member.NewRedisLimiter(rdb)), member.WithLoginLimits(3, 100, time.Hour)))(t)
	}
	_, err := instances[0].SignUp(ctx, "alice", "correct horse")
	require.NoError(t, err)
	var bad, limited int
	for i := range 8 {
		_, err := instances[i%2].Login(ctx, "alice", "guess", "10.3.0.1")
		switch {
		case errors.Is(err, member.ErrBadCredentials):
			bad++
		case errors.Is(err, member.ErrTooManyAttempts):
			limited++
		default:
			t.Fatalf("login %d: %v", i, err)
		}
	}
	assert.Equal(t, 3, bad, "guesses that reached the password check, over both instances")
	assert.Equal(t, 5, limited)
	for _, in := range instances {
		_, err := in.Login(ctx, "alice", "correct horse", "10.3.0.2")
		assert.ErrorIs(t, err, member.ErrTooManyAttempts, "the login ID is limited on every instance")
	}
}

// TestLimiterDownFailsClosed: when the limiter's Redis stops answering (paused), a login
// is refused with an error matching errcode.ErrUnavailable, not let through unlimited.
// Once Redis is back the budget is no larger than before: an attempt refused during the
// outage may still take its token when Redis resumes (its script was already sent), so the
// limits err on the strict side only.
func TestLimiterDownFailsClosed(t *testing.T) {
	db := testenv.MySQL(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	own := testenv.OwnRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: own.Addr, ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, MaxRetries: -1})
	defer rdb.Close()
	svc := testkit.Must(member.New(db, member.NewSQLDenylist(db, nil), secret, member.WithBcryptCost(bcrypt.MinCost),
		member.WithLimiter(member.NewRedisLimiter(rdb)), member.WithLoginLimits(2, 100, time.Hour)))(t)
	_, err := svc.SignUp(ctx, "alice", "correct horse")
	require.NoError(t, err)
	_, err = svc.Login(ctx, "alice", "guess", "10.4.0.1")
	require.ErrorIs(t, err, member.ErrBadCredentials)

	own.Pause(t)
	for range 3 {
		_, err = svc.Login(ctx, "alice", "correct horse", "10.4.0.1")
		require.ErrorIs(t, err, errcode.ErrUnavailable)
		assert.Equal(t, errcode.DependencyUnavailable, errcode.CodeOf(err))
	}
	own.Unpause(t)

	require.Eventually(t, func() bool { return rdb.Ping(ctx).Err() == nil }, 10*time.Second, 50*time.Millisecond)
	_, err = svc.Login(ctx, "alice", "guess", "10.4.0.1")
	require.True(t, errorsIsAny(err, member.ErrBadCredentials, member.ErrTooManyAttempts), "%v", err)
	_, err = svc.Login(ctx, "alice", "correct horse", "10.4.0.1")
	require.ErrorIs(t, err, member.ErrTooManyAttempts, "two failures used the budget of two, whatever the outage did")
	_, err = svc.Login(ctx, "bob", "guess", "10.4.0.1")
	require.ErrorIs(t, err, member.ErrBadCredentials, "the limiter works again")
}
