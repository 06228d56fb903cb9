package member_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
