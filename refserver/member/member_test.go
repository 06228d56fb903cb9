package member_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"golang.org/x/crypto/bcrypt"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/testclock"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/refserver/member"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var (
	ctx    = context.Background()
	secret = []byte("member-test-secret-0123456789")
)

// env is a member Service on one storage configuration.
type env struct {
	db    *bun.DB
	clock *testclock.Clock
	svc   *member.Service
	deny  member.Denylist
}

// modes are the two deployments: the embedded default (SQLite, SQL denylist) and full
// mode (MariaDB, Redis denylist).
var modes = []struct {
	name string
	open func(t *testing.T, now func() time.Time) (*bun.DB, member.Denylist, []member.Option)
}{
	{"embedded-sqlite", func(t *testing.T, now func() time.Time) (*bun.DB, member.Denylist, []member.Option) {
		db := testenv.SQLite(t)
		return db, member.NewSQLDenylist(db, now), nil
	}},
	{"full-mysql-redis", func(t *testing.T, now func() time.Time) (*bun.DB, member.Denylist, []member.Option) {
		db, rdb := testenv.MySQL(t), testenv.Redis(t)
		// The limiter keeps Redis's time unless given the test's clock.
		limiter := member.NewRedisLimiter(rdb, member.WithLimiterClock(now))
		return db, member.NewRedisDenylist(rdb, member.NewSQLDenylist(db, nil)), []member.Option{member.WithLimiter(limiter)}
	}},
}

func each(t *testing.T, fn func(t *testing.T, e *env), opts ...member.Option) {
	eachWrapped(t, func(d member.Denylist) member.Denylist { return d }, fn, opts...)
}

// eachWrapped is each with the mode's denylist wrapped by wrap.
func eachWrapped(t *testing.T, wrap func(member.Denylist) member.Denylist, fn func(t *testing.T, e *env), opts ...member.Option) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := testclock.New(time.Now().Truncate(time.Second))
			db, deny, modeOpts := m.open(t, c.Now)
			deny = wrap(deny)
			require.NoError(t, member.CreateSchema(ctx, db))
			require.NoError(t, member.CreateSchema(ctx, db), "idempotent")
			svc, err := member.New(db, deny, secret, append(append([]member.Option{member.WithClock(c.Now),
				member.WithBcryptCost(bcrypt.MinCost)}, modeOpts...), opts...)...)
			require.NoError(t, err)
			fn(t, &env{db: db, clock: c, svc: svc, deny: deny})
		})
	}
}

// claims parses an access token as a server would, at the env's time.
func (e *env) claims(t *testing.T, token string) member.AccessClaims {
	t.Helper()
	var c member.AccessClaims
	_, err := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(e.clock.Now)).ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return secret, nil })
	require.NoError(t, err)
	return c
}

// aliceLoggedIn signs alice up and logs her in.
func (e *env) aliceLoggedIn(t *testing.T) member.Tokens {
	t.Helper()
	_, err := e.svc.SignUp(ctx, "alice", "correct horse")
	require.NoError(t, err)
	tok, err := e.svc.Login(ctx, "alice", "correct horse", "10.0.0.1")
	require.NoError(t, err)
	return tok
}

func (e *env) revoked(t *testing.T, token string) bool {
	t.Helper()
	return testkit.Must(e.svc.Revoked(ctx, e.claims(t, token).ID))(t)
}

func TestSignUp(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		m, err := e.svc.SignUp(ctx, "alice", "correct horse")
		require.NoError(t, err)
		assert.Len(t, m.ID, 36)
		assert.Equal(t, "alice", m.LoginID)

		_, err = e.svc.SignUp(ctx, "alice", "another password")
		assert.ErrorIs(t, err, member.ErrLoginIDTaken)
		other, err := e.svc.SignUp(ctx, "Alice", "correct horse")
		require.NoError(t, err, "login IDs compare byte for byte")
		assert.NotEqual(t, m.ID, other.ID)

		for _, tc := range []struct{ field, login, password string }{
			{"login_id", "al", "correct horse"},
			{"login_id", strings.Repeat("a", 65), "correct horse"},
			{"login_id", "al ice", "correct horse"},
			{"login_id", "alïce", "correct horse"},
			{"password", "bob", "short"},
			{"password", "bob", strings.Repeat("p", 73)},
			{"password", "bob", "bad utf8 \xff\xfe"},
			{"password", "bobby-tables", "bobby-tables"},
		} {
			_, err := e.svc.SignUp(ctx, tc.login, tc.password)
			var ve *member.ValidationError
			require.ErrorAs(t, err, &ve, "%q/%q", tc.login, tc.password)
			assert.Equal(t, tc.field, ve.Field)
			assert.ErrorIs(t, err, member.ErrInvalidRequest)
		}
		n, err := e.db.NewSelect().Table("members").Count(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 2, n, "bad input changed nothing")

		// The password is stored only as a bcrypt hash.
		var hash string
		require.NoError(t, e.db.NewSelect().Table("members").Column("password_hash").Where("id = ?", m.ID).Scan(ctx, &hash))
		assert.NotContains(t, hash, "correct horse")
		assert.NoError(t, bcrypt.CompareHashAndPassword([]byte(hash), []byte("correct horse")))
	})
}

func TestLoginRefreshLogout(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		m, err := e.svc.SignUp(ctx, "alice", "correct horse")
		require.NoError(t, err)
		_, err = e.svc.Login(ctx, "alice", "wrong horse", "10.0.0.1")
		assert.ErrorIs(t, err, member.ErrBadCredentials)
		_, err = e.svc.Login(ctx, "nobody", "correct horse", "10.0.0.1")
		assert.ErrorIs(t, err, member.ErrBadCredentials)
		_, err = e.svc.Login(ctx, "ALICE", "correct horse", "10.0.0.1")
		assert.ErrorIs(t, err, member.ErrBadCredentials, "byte for byte")

		t1, err := e.svc.Login(ctx, "alice", "correct horse", "10.0.0.1")
		require.NoError(t, err)
		c := e.claims(t, t1.AccessToken)
		assert.Equal(t, m.ID, c.Subject)
		assert.Len(t, c.ID, 36, "jti")
		assert.Equal(t, t1.SessionID, c.SessionID)
		assert.Equal(t, e.clock.Now().Add(member.DefaultAccessTTL).Unix(), c.ExpiresAt.Unix())
		assert.False(t, e.revoked(t, t1.AccessToken))

		// The refresh token is stored only as its SHA-256.
		var hashes []string
		require.NoError(t, e.db.NewSelect().Table("member_refresh_tokens").Column("hash").Scan(ctx, &hashes))
		require.Len(t, hashes, 1)
		assert.NotContains(t, hashes[0], t1.RefreshToken)
		assert.Len(t, hashes[0], 64)

		// Rotation: the new pair works, in the same session.
		e.clock.Advance(time.Minute)
		t2, err := e.svc.Refresh(ctx, t1.RefreshToken)
		require.NoError(t, err)
		assert.Equal(t, t1.SessionID, t2.SessionID)
		assert.NotEqual(t, t1.RefreshToken, t2.RefreshToken)
		assert.NotEqual(t, e.claims(t, t1.AccessToken).ID, e.claims(t, t2.AccessToken).ID)
		_, err = e.svc.Refresh(ctx, "no-such-token")
		assert.ErrorIs(t, err, member.ErrInvalidRefreshToken)

		// Logout: this token and the session's other live access token are denied, and its
		// refresh token no longer works. Repeating it is harmless.
		c2 := e.claims(t, t2.AccessToken)
		require.NoError(t, e.svc.Logout(ctx, c2.ID, c2.SessionID, c2.ExpiresAt.Time))
		assert.True(t, e.revoked(t, t2.AccessToken))
		assert.True(t, e.revoked(t, t1.AccessToken))
		_, err = e.svc.Refresh(ctx, t2.RefreshToken)
		assert.ErrorIs(t, err, member.ErrInvalidRefreshToken)
		require.NoError(t, e.svc.Logout(ctx, c2.ID, c2.SessionID, c2.ExpiresAt.Time))

		// Another session is untouched.
		t3, err := e.svc.Login(ctx, "alice", "correct horse", "10.0.0.1")
		require.NoError(t, err)
		assert.False(t, e.revoked(t, t3.AccessToken))
		_, err = e.svc.Refresh(ctx, t3.RefreshToken)
		require.NoError(t, err)

		// A token without a jti cannot be revoked; one without a session only by its jti.
		assert.ErrorIs(t, e.svc.Logout(ctx, "", "", e.clock.Now().Add(time.Hour)), member.ErrNotRevocable)
		require.NoError(t, e.svc.Logout(ctx, "tool-token-jti", "", e.clock.Now().Add(time.Hour)))
		got, err := e.svc.Revoked(ctx, "tool-token-jti")
		require.NoError(t, err)
		assert.True(t, got)

		// Token IDs the Service never mints can be neither revoked nor found revoked: they
		// are refused as invalid, not let through nor answered as an outage (a 65-byte jti
		// does not fit the denylist's column).
		for _, id := range []string{strings.Repeat("j", member.MaxTokenIDLen+1), "j\x00", "j k"} {
			assert.ErrorIs(t, e.svc.Logout(ctx, id, "", e.clock.Now().Add(time.Hour)), errcode.ErrInvalidArgument, "%q", id)
			assert.ErrorIs(t, e.svc.Logout(ctx, "tool-token-jti", id, e.clock.Now().Add(time.Hour)), errcode.ErrInvalidArgument, "%q", id)
			_, err := e.svc.Revoked(ctx, id)
			assert.ErrorIs(t, err, errcode.ErrInvalidArgument, "%q", id)
		}
	})
}

func TestRefreshExpiry(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		tok := e.aliceLoggedIn(t)
		e.clock.Advance(time.Hour + time.Second)
		_, err := e.svc.Refresh(ctx, tok.RefreshToken)
		assert.ErrorIs(t, err, member.ErrInvalidRefreshToken)
	}, member.WithTokenTTLs(time.Minute, time.Hour))
}

// TestRefreshReuse: a refresh token used twice revokes the whole family: the tokens the
// first use issued stop working too.
func TestRefreshReuse(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		t1 := e.aliceLoggedIn(t)
		t2, err := e.svc.Refresh(ctx, t1.RefreshToken)
		require.NoError(t, err)
		t3, err := e.svc.Refresh(ctx, t2.RefreshToken)
		require.NoError(t, err)

		_, err = e.svc.Refresh(ctx, t1.RefreshToken) // the thief replays an old one
		require.ErrorIs(t, err, member.ErrRefreshTokenReused)
		for _, tok := range []member.Tokens{t1, t2, t3} {
			assert.True(t, e.revoked(t, tok.AccessToken), "every live access token of the family is denied")
		}
		_, err = e.svc.Refresh(ctx, t3.RefreshToken)
		assert.ErrorIs(t, err, member.ErrInvalidRefreshToken, "the family is revoked")
		_, err = e.svc.Refresh(ctx, t1.RefreshToken)
		assert.ErrorIs(t, err, member.ErrInvalidRefreshToken)
	})
}

// hangUpOnDeny is a denylist whose client hangs up as the first denial starts: Deny
// cancels ctx, the context of the request under test, then denies through ctx as given.
type hangUpOnDeny struct {
	member.Denylist
	ctx    context.Context
	cancel context.CancelFunc
}

func (h *hangUpOnDeny) Deny(ctx context.Context, jti string, until time.Time) error {
	h.cancel()
	return h.Denylist.Deny(ctx, jti, until)
}

// TestRevocationOutlivesTheRequest: a thief who replays a refresh token, or a user who logs
// out, and hangs up as soon as the session is revoked still gets every access token the
// request revoked denied: the denials do not run under the request's cancellation.
func TestRevocationOutlivesTheRequest(t *testing.T) {
	wrap := func(d member.Denylist) member.Denylist {
		h := &hangUpOnDeny{Denylist: d}
		h.ctx, h.cancel = context.WithCancel(ctx)
		return h
	}
	for _, logout := range []bool{false, true} {
		t.Run(map[bool]string{false: "replayed-refresh-token", true: "logout"}[logout], func(t *testing.T) {
			eachWrapped(t, wrap, func(t *testing.T, e *env) {
				h := e.deny.(*hangUpOnDeny)
				t1 := e.aliceLoggedIn(t)
				t2, err := e.svc.Refresh(ctx, t1.RefreshToken)
				require.NoError(t, err)
				if logout {
					c := e.claims(t, t2.AccessToken)
					require.NoError(t, e.svc.Logout(h.ctx, c.ID, c.SessionID, c.ExpiresAt.Time))
				} else {
					_, err = e.svc.Refresh(h.ctx, t1.RefreshToken)
					require.ErrorIs(t, err, member.ErrRefreshTokenReused)
				}
				for _, tok := range []member.Tokens{t1, t2} {
					assert.True(t, e.revoked(t, tok.AccessToken))
				}
			})
		})
	}
}

// TestConcurrentRefresh: one refresh token presented many times at once is a reuse: at
// most one presentation wins, and the family ends revoked with every token it issued.
func TestConcurrentRefresh(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		t1 := e.aliceLoggedIn(t)
		const n = 12
		got := make([]member.Tokens, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { got[i], errs[i] = e.svc.Refresh(ctx, t1.RefreshToken) })
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			if err == nil {
				won++
				assert.True(t, e.revoked(t, got[i].AccessToken), "the winner's token is revoked with the family")
				continue
			}
			assert.True(t, errorsIsAny(err, member.ErrRefreshTokenReused, member.ErrInvalidRefreshToken), "%v", err)
		}
		assert.Equal(t, 1, won, "exactly one presentation rotates the token")
		assert.True(t, e.revoked(t, t1.AccessToken))
	})
}

func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// TestBruteForce: failed logins are limited per login ID and per address, with a
// Retry-After; the limits refill with time.
func TestBruteForce(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		_, err := e.svc.SignUp(ctx, "alice", "correct horse")
		require.NoError(t, err)
		for i := range 3 {
			_, err := e.svc.Login(ctx, "alice", "guess", "10.0.0."+string(rune('1'+i)))
			require.ErrorIs(t, err, member.ErrBadCredentials)
		}
		_, err = e.svc.Login(ctx, "alice", "correct horse", "10.0.0.9")
		var rl *member.RateLimitError
		require.ErrorAs(t, err, &rl, "even the right password, from another address")
		assert.Equal(t, "login_id", rl.By)
		assert.Equal(t, 20*time.Second, rl.RetryAfter.Round(time.Second), "one of 3 tokens per minute")
		_, err = e.svc.Login(ctx, "bob", "guess", "10.0.0.9")
		assert.ErrorIs(t, err, member.ErrBadCredentials, "other login IDs are not limited by alice's")

		e.clock.Advance(rl.RetryAfter)
		_, err = e.svc.Login(ctx, "alice", "correct horse", "10.0.0.9")
		require.NoError(t, err, "refilled")

		// Per address: 5 failures from one address over many login IDs.
		for i := range 4 {
			_, err := e.svc.Login(ctx, "user"+string(rune('a'+i)), "guess", "192.0.2.1")
			require.ErrorIs(t, err, member.ErrBadCredentials)
		}
		_, err = e.svc.Login(ctx, "alice", "correct horse", "192.0.2.1")
		require.ErrorAs(t, err, &rl)
		assert.Equal(t, "address", rl.By)
		assert.ErrorIs(t, err, member.ErrTooManyAttempts)
		_, err = e.svc.Login(ctx, "alice", "correct horse", "192.0.2.2")
		require.NoError(t, err, "other addresses are not limited")
	}, member.WithLoginLimits(3, 4, time.Minute))
}

// TestDenylistDown: a denylist that cannot answer is an error matching
// errcode.ErrUnavailable, never "not revoked"; logout fails the same way.
func TestDenylistDown(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		opts := *testenv.Redis(t).Options() // a database of the test's own
		opts.DialTimeout = 200 * time.Millisecond
		rdb := redis.NewClient(&opts)
		require.NoError(t, rdb.Close())
		db := testenv.SQLite(t)
		require.NoError(t, member.CreateSchema(ctx, db))
		deny := member.NewRedisDenylist(rdb, member.NewSQLDenylist(db, nil))
		_, err := deny.Denied(ctx, "jti")
		assert.ErrorIs(t, err, errcode.ErrUnavailable)
		assert.ErrorIs(t, deny.Deny(ctx, "jti", time.Now().Add(time.Minute)), errcode.ErrUnavailable)
	})
	t.Run("sql", func(t *testing.T) {
		db := testenv.SQLite(t)
		require.NoError(t, member.CreateSchema(ctx, db))
		svc, err := member.New(db, member.NewSQLDenylist(db, nil), secret, member.WithBcryptCost(bcrypt.MinCost))
		require.NoError(t, err)
		require.NoError(t, db.Close())
		_, err = svc.Revoked(ctx, "jti")
		assert.ErrorIs(t, err, errcode.ErrUnavailable)
		assert.ErrorIs(t, svc.Logout(ctx, "jti", "", time.Now().Add(time.Minute)), errcode.ErrUnavailable)
	})
}

// TestSQLDenylistPurge: entries go once their token has expired.
func TestSQLDenylistPurge(t *testing.T) {
	c := testclock.New(time.Now())
	db := testenv.SQLite(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	deny := member.NewSQLDenylist(db, c.Now)
	require.NoError(t, deny.Deny(ctx, "a", c.Now().Add(time.Minute)))
	require.NoError(t, deny.Deny(ctx, "a", c.Now().Add(time.Minute)), "idempotent")
	require.NoError(t, deny.Deny(ctx, "b", c.Now().Add(time.Hour)))
	c.Advance(2 * time.Minute)
	n, err := deny.Purge(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	for jti, want := range map[string]bool{"a": false, "b": true} {
		got, err := deny.Denied(ctx, jti)
		require.NoError(t, err)
		assert.Equal(t, want, got, jti)
	}
}

// TestNewRefusesBadOptions: every invalid option value is refused, naming the option.
func TestNewRefusesBadOptions(t *testing.T) {
	db := testenv.SQLite(t)
	construct := func(opts ...member.Option) (*member.Service, error) {
		return member.New(db, member.NewSQLDenylist(db, nil), []byte("secret"), opts...)
	}
	testkit.RefusesBadOptions(t, construct, map[string]member.Option{
		"WithClock: nil":               member.WithClock(nil),
		"WithTokenTTLs: 0s, 1h0m0s":    member.WithTokenTTLs(0, time.Hour),
		"WithTokenTTLs: 1m0s, -1s":     member.WithTokenTTLs(time.Minute, -time.Second),
		"WithBcryptCost: 0":            member.WithBcryptCost(0),
		"WithBcryptCost: 32":           member.WithBcryptCost(bcrypt.MaxCost + 1),
		"WithLoginLimits: 0, 1, 1m0s":  member.WithLoginLimits(0, 1, time.Minute),
		"WithLoginLimits: 1, 0, 1m0s":  member.WithLoginLimits(1, 0, time.Minute),
		"WithLoginLimits: 1, 1, 0s":    member.WithLoginLimits(1, 1, 0),
		"WithLoginLimits: 1, 1, 999µs": member.WithLoginLimits(1, 1, time.Millisecond-time.Microsecond),
		"WithLimiter: nil":             member.WithLimiter(nil),
		"WithCheckTimeout: 0s":         member.WithCheckTimeout(0),
	}, member.ErrInvalidRequest)
	testkit.Must(construct(member.WithBcryptCost(bcrypt.MinCost), member.WithTokenTTLs(time.Minute, time.Hour),
		member.WithLoginLimits(1, 1, time.Minute), member.WithCheckTimeout(time.Second)))(t)
}

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
		instances[i] = testkit.Must(member.New(db, member.NewRedisDenylist(rdb, member.NewSQLDenylist(db, nil)), secret, member.WithBcryptCost(bcrypt.MinCost),
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

// TestRefreshRacingLogout: a refresh and a logout of the same session at once end with
// every access token of the session denied, the refreshed one too when the refresh won.
// TestRevokeByRefreshToken: a client ends its session with its refresh token alone (for
// when its access token has expired): the session's live access tokens are denied and its
// refresh tokens no longer work, whichever of them was presented (an old, used one too);
// another session is untouched. Revoking again, or an unknown token, changes nothing and
// is no error; an empty or oversized token is a *ValidationError.
func TestRevokeByRefreshToken(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		t1 := e.aliceLoggedIn(t)
		t3 := testkit.Must(e.svc.Login(ctx, "alice", "correct horse", "10.0.0.1"))(t)
		e.clock.Advance(time.Minute)
		t2 := testkit.Must(e.svc.Refresh(ctx, t1.RefreshToken))(t)

		require.NoError(t, e.svc.Revoke(ctx, t1.RefreshToken), "the session's first, used refresh token")
		assert.True(t, e.revoked(t, t1.AccessToken))
		assert.True(t, e.revoked(t, t2.AccessToken))
		_, err := e.svc.Refresh(ctx, t2.RefreshToken)
		assert.ErrorIs(t, err, member.ErrInvalidRefreshToken)
		require.NoError(t, e.svc.Revoke(ctx, t2.RefreshToken), "again")
		require.NoError(t, e.svc.Revoke(ctx, "no-such-token"))

		var invalid *member.ValidationError
		assert.ErrorAs(t, e.svc.Revoke(ctx, ""), &invalid)
		assert.ErrorAs(t, e.svc.Revoke(ctx, strings.Repeat("x", 129)), &invalid)

		assert.False(t, e.revoked(t, t3.AccessToken), "another session")
		_, err = e.svc.Refresh(ctx, t3.RefreshToken)
		require.NoError(t, err)
	})
}

func TestRefreshRacingLogout(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		_, err := e.svc.SignUp(ctx, "alice", "correct horse")
		require.NoError(t, err)
		for range 10 {
			t1, err := e.svc.Login(ctx, "alice", "correct horse", "10.0.0.1")
			require.NoError(t, err)
			c := e.claims(t, t1.AccessToken)
			var (
				wg         sync.WaitGroup
				refreshed  member.Tokens
				rerr, lerr error
			)
			wg.Go(func() { refreshed, rerr = e.svc.Refresh(ctx, t1.RefreshToken) })
			wg.Go(func() { lerr = e.svc.Logout(ctx, c.ID, c.SessionID, c.ExpiresAt.Time) })
			wg.Wait()
			require.NoError(t, lerr)
			assert.True(t, e.revoked(t, t1.AccessToken))
			if rerr != nil {
				require.ErrorIs(t, rerr, member.ErrInvalidRefreshToken)
				continue
			}
			assert.True(t, e.revoked(t, refreshed.AccessToken), "the refresh won: its token is denied with the session")
			_, err = e.svc.Refresh(ctx, refreshed.RefreshToken)
			require.ErrorIs(t, err, member.ErrInvalidRefreshToken)
		}
	})
}

// TestRefreshOnce: a refresh token presented again with the key its rotation ran under,
// while the token that rotation issued is unused, gets that rotation's answer again (the
// answer a retry lost); with another key, without one, or once the new token was used,
// it is a reuse and revokes the family.
func TestRefreshOnce(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		t1 := e.aliceLoggedIn(t)
		t2, err := e.svc.RefreshOnce(ctx, t1.RefreshToken, "rot-1") // its answer lost
		require.NoError(t, err)
		e.clock.Advance(5 * time.Second)
		again, err := e.svc.RefreshOnce(ctx, t1.RefreshToken, "rot-1") // the retry
		require.NoError(t, err)
		assert.Equal(t, t2, again, "the same answer")
		assert.False(t, e.revoked(t, t2.AccessToken))
		t3, err := e.svc.RefreshOnce(ctx, t2.RefreshToken, "rot-2")
		require.NoError(t, err)
		_, err = e.svc.RefreshOnce(ctx, t1.RefreshToken, "rot-1")
		require.ErrorIs(t, err, member.ErrRefreshTokenReused, "its successor was used")
		for _, tok := range []member.Tokens{t1, t2, t3} {
			assert.True(t, e.revoked(t, tok.AccessToken))
		}
	})
	for name, key := range map[string]string{"another-key": "rot-x", "no-key": ""} {
		t.Run(name, func(t *testing.T) {
			each(t, func(t *testing.T, e *env) {
				t1 := e.aliceLoggedIn(t)
				t2, err := e.svc.RefreshOnce(ctx, t1.RefreshToken, "rot-1")
				require.NoError(t, err)
				_, err = e.svc.RefreshOnce(ctx, t1.RefreshToken, key) // a thief without the key
				require.ErrorIs(t, err, member.ErrRefreshTokenReused)
				assert.True(t, e.revoked(t, t2.AccessToken), "the family is revoked")
				_, err = e.svc.RefreshOnce(ctx, t1.RefreshToken, "rot-1")
				require.ErrorIs(t, err, member.ErrInvalidRefreshToken)
			})
		})
	}
	t.Run("key-too-long", func(t *testing.T) {
		each(t, func(t *testing.T, e *env) {
			t1 := e.aliceLoggedIn(t)
			_, err := e.svc.RefreshOnce(ctx, t1.RefreshToken, strings.Repeat("k", member.MaxKeyLen+1))
			require.ErrorIs(t, err, member.ErrInvalidRequest)
			_, err = e.svc.RefreshOnce(ctx, t1.RefreshToken, strings.Repeat("k", member.MaxKeyLen))
			require.NoError(t, err, "nothing was used")
		})
	})
}

// stallReads holds every read of the members table until release is closed, counting
// the reads it holds in held.
type stallReads struct {
	held    chan struct{}
	release chan struct{}
}

func (s *stallReads) BeforeQuery(ctx context.Context, e *bun.QueryEvent) context.Context {
	if strings.HasPrefix(e.Query, "SELECT") && strings.Contains(e.Query, "members") {
		s.held <- struct{}{}
		<-s.release
	}
	return ctx
}

func (s *stallReads) AfterQuery(context.Context, *bun.QueryEvent) {}

// TestLoginsInFlightAreNotFailures: logins from one address that are slow only because the
// database is (a stall: every member read waits) are not refused as too many failed logins
// from that address, however many are in flight at once: the address's budget counts
// password checks, and none has failed. (The budget per login ID still limits guesses
// sent at once: TestConcurrentGuessesLimited.)
func TestLoginsInFlightAreNotFailures(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		const n = 3 // one more than the address's budget
		for i := range n {
			_, err := e.svc.SignUp(ctx, fmt.Sprintf("member-%d", i), "correct horse")
			require.NoError(t, err)
		}
		stall := &stallReads{held: make(chan struct{}, n), release: make(chan struct{})}
		svc := testkit.Must(member.New(e.db.WithQueryHook(stall), e.deny, secret, member.WithClock(e.clock.Now),
			member.WithBcryptCost(bcrypt.MinCost), member.WithLoginLimits(5, n-1, time.Hour)))(t)
		errs := make(chan error, n)
		for i := range n {
			go func() {
				_, err := svc.Login(ctx, fmt.Sprintf("member-%d", i), "correct horse", "198.51.100.7")
				errs <- err
			}()
		}
		for held := 0; held < n; {
			select {
			case <-stall.held:
				held++
			case err := <-errs:
				close(stall.release)
				t.Fatalf("a login answered while the database stalled the others: %v", err)
			}
		}
		close(stall.release)
		for range n {
			assert.NoError(t, <-errs)
		}
	})
}

// TestSignUpOnce: a sign-up retried with its key, login ID and password gets the member it
// recorded, as first answered, and records nothing more; with the key and another
// password, with another key or with none it is ErrLoginIDTaken. The password check of a
// retry with the key is a login attempt: charged to the login ID's failure budget, given
// back when the password matches, refused once the budget is spent.
func TestSignUpOnce(t *testing.T) {
	each(t, func(t *testing.T, e *env) {
		m, err := e.svc.SignUpOnce(ctx, "carol", "correct horse", "k-1", "10.5.0.1")
		require.NoError(t, err)
		for range 3 {
			again, err := e.svc.SignUpOnce(ctx, "carol", "correct horse", "k-1", "10.5.0.1")
			require.NoError(t, err)
			assert.Equal(t, m, again, "the same answer")
		}
		for _, tc := range []struct{ password, key string }{
			{"correct horse", ""}, {"correct horse", "k-2"}, {"another horse", ""}, {"another horse", "k-2"},
		} {
			_, err := e.svc.SignUpOnce(ctx, "carol", tc.password, tc.key, "10.5.0.1")
			require.ErrorIs(t, err, member.ErrLoginIDTaken, "%+v", tc)
		}
		_, err = e.svc.SignUp(ctx, "carol", "correct horse")
		require.ErrorIs(t, err, member.ErrLoginIDTaken, "SignUp has no key")
		// The key is bound to its login ID: under another one it is another sign-up.
		other, err := e.svc.SignUpOnce(ctx, "dave", "correct horse", "k-1", "10.5.0.1")
		require.NoError(t, err)
		assert.NotEqual(t, m.ID, other.ID)

		// Two failures of the budget of two: the third check is refused, even with the
		// right password, and so is a login.
		for range 2 {
			_, err := e.svc.SignUpOnce(ctx, "carol", "another horse", "k-1", "10.5.0.2")
			require.ErrorIs(t, err, member.ErrLoginIDTaken)
		}
		_, err = e.svc.SignUpOnce(ctx, "carol", "correct horse", "k-1", "10.5.0.3")
		var rl *member.RateLimitError
		require.ErrorAs(t, err, &rl)
		assert.Equal(t, "login_id", rl.By)
		_, err = e.svc.Login(ctx, "carol", "correct horse", "10.5.0.3")
		require.ErrorIs(t, err, member.ErrTooManyAttempts)

		n, err := e.db.NewSelect().Table("members").Count(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 2, n, "carol and dave, once each")
		var key string
		require.NoError(t, e.db.NewSelect().Table("members").Column("signup_key").Where("id = ?", m.ID).Scan(ctx, &key))
		assert.Len(t, key, 64, "an HMAC, not the key")
		assert.NotContains(t, key, "k-1")

		_, err = e.svc.SignUpOnce(ctx, "erin", "correct horse", strings.Repeat("k", member.MaxKeyLen+1), "10.5.0.1")
		require.ErrorIs(t, err, member.ErrInvalidRequest)
	}, member.WithLoginLimits(2, 100, time.Hour))
}

// TestSignUpKeyColumnAdded: a members table made before SignUpOnce gets its column from
// CreateSchema, and its members stay; a sign-up with a key works on it.
func TestSignUpKeyColumnAdded(t *testing.T) {
	db := testenv.SQLite(t)
	_, err := db.ExecContext(ctx, `CREATE TABLE members (id VARCHAR(64) NOT NULL PRIMARY KEY,
		login_id VARCHAR(64) NOT NULL, password_hash VARCHAR(100) NOT NULL, created_at BIGINT NOT NULL)`)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, `INSERT INTO members VALUES ('old-id', 'olga', 'x', 1)`)
	require.NoError(t, err)
	require.NoError(t, member.CreateSchema(ctx, db))
	require.NoError(t, member.CreateSchema(ctx, db), "idempotent")
	svc, err := member.New(db, member.NewSQLDenylist(db, nil), secret, member.WithBcryptCost(bcrypt.MinCost))
	require.NoError(t, err)
	m, err := svc.SignUpOnce(ctx, "carol", "correct horse", "k-1", "10.5.0.1")
	require.NoError(t, err)
	again, err := svc.SignUpOnce(ctx, "carol", "correct horse", "k-1", "10.5.0.1")
	require.NoError(t, err)
	assert.Equal(t, m, again)
	_, err = svc.SignUpOnce(ctx, "olga", "correct horse", "k-1", "10.5.0.1")
	require.ErrorIs(t, err, member.ErrLoginIDTaken, "a member signed up without a key")
}
