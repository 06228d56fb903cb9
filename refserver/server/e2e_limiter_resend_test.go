package server_test

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/refserver/member"
	"github.com/commercekit/commercekit/refserver/server"
)

// resendHold holds back a resend on a lossyLink: held is closed once one is held, and
// release lets it (and any later one) through.
type resendHold struct {
	held, release chan struct{}
	heldOnce      sync.Once
	releaseOnce   sync.Once
}

// holdResends makes the link hold back the statements identical to one whose reply it
// lost — the client sending it again, on another connection — until release is called
// (at the latest when the test ends). held is closed once such a statement is held: the
// test can then send other statements in between the first and its resend.
func (l *lossyLink) holdResends(t *testing.T) (held <-chan struct{}, release func()) {
	h := &resendHold{held: make(chan struct{}), release: make(chan struct{})}
	l.mu.Lock()
	l.holding = h
	l.mu.Unlock()
	release = func() {
		h.releaseOnce.Do(func() { close(h.release) })
	}
	t.Cleanup(release)
	return h.held, release
}

// holdBack waits, when text is the resend of a statement whose reply was lost and the
// link holds resends, until the hold is released.
func (l *lossyLink) holdBack(text string) {
	l.mu.Lock()
	h := l.holding
	resend := h != nil && slices.Contains(l.lost, text)
	l.mu.Unlock()
	if !resend {
		return
	}
	h.heldOnce.Do(func() { close(h.held) })
	<-h.release
}

// waitHeld waits until the link holds a resend (a guard, not a timed assertion: the
// resend comes within the Redis client's retry pause).
func waitHeld(t *testing.T, held <-chan struct{}) {
	t.Helper()
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the client never sent the command again")
	}
}

// TestAttackLimiterResendAfterAnotherCall: a limiter call whose Redis reply was lost is
// sent again by the Redis client; another client's call on the same bucket landing in
// between must not make the resend count again. The login limit (5 failures per login
// ID): attempt A (its take's reply lost, its resend held back), attempt B, then A's
// resend: two failures, so three more are answered 401 and only the sixth 429. The write
// limit (a burst of 3): write A the same way, write B, A's resend: one more write passes,
// the next is 429.
func TestAttackLimiterResendAfterAnotherCall(t *testing.T) {
	t.Run("login", func(t *testing.T) {
		e, link := newRedisLossyEnv(t)
		expect(t, e.call("POST", "/v1/members", "", "", server.SignUpJSON{LoginID: "bob", Password: "correct horse"}), http.StatusCreated)
		wrong := server.LoginJSON{LoginID: "bob", Password: "wrong horse"}
		take := func(q string) bool {
			return strings.Contains(q, "commercekit:login:id bob") && strings.Contains(q, " take")
		}
		interleaved(t, link, take, func() (resp, error) { return e.try("POST", "/v1/sessions", "", "", wrong) },
			http.StatusUnauthorized)
		for i := 3; i <= member.DefaultAccountFailures; i++ {
			expectProblem(t, e.call("POST", "/v1/sessions", "", "", wrong), http.StatusUnauthorized, "invalid_credentials")
		}
		expectProblem(t, e.call("POST", "/v1/sessions", "", "", wrong), http.StatusTooManyRequests, "too_many_login_attempts")
	})
	t.Run("writes", func(t *testing.T) {
		rdb := testenv.OwnRedis(t)
		link := newLossyRedisLink(t, rdb.Addr)
		cfg, sim, setHook := fullConfig(t, testenv.MySQLDSN(t), link.Addr(), 0)
		cfg.RateLimit, cfg.RateBurst = 0.001, 3
		cfg.RateLimitRedisTimeout = time.Minute // the held resend is waited for, not given up on
		a := start(t, backend{name: "lossy-redis-writes", config: func(*testing.T) (server.Config, *pgsim.Simulator, func(string)) {
			return cfg, sim, setHook
		}}, nil, fastHash)
		e := &attackEnv{app: a}
		tok := token(t, "writer", false)
		take := func(q string) bool { return strings.Contains(q, "commercekit:writes:writer ") }
		write := func() (resp, error) { return e.try("DELETE", "/v1/cart/items/p1", tok, "", nil) }
		// Another user's write loads the script first: the lost reply must be the take's,
		// not a NOSCRIPT answer (go-redis then sends the script itself).
		expect(t, e.call("DELETE", "/v1/cart/items/p1", token(t, "other", false), "", nil), http.StatusOK)
		interleaved(t, link, take, write, http.StatusOK)
		expect(t, testkit.Must(write())(t), http.StatusOK)
		expectProblem(t, testkit.Must(write())(t), http.StatusTooManyRequests, "rate_limited")
		asked, unanswered, local := server.WriteLimitStats(a.srv)
		assert.Equal(t, [3]int64{5, 0, 0}, [3]int64{asked, unanswered, local}, "every write was limited by Redis")
	})
}

// interleaved sends a request whose first limiter call match accepts has its Redis reply
// lost and its resend held back, sends another (each answered status), and then lets the
// resend through.
func interleaved(t *testing.T, link *lossyLink, match func(string) bool, send func() (resp, error), status int) {
	t.Helper()
	held, release := link.holdResends(t)
	link.armAfter(nil, testenv.Nth(1, match))
	type answer struct {
		r   resp
		err error
	}
	first := make(chan answer, 1)
	go func() {
		r, err := send()
		first <- answer{r, err}
	}()
	waitHeld(t, held)
	expect(t, testkit.Must(send())(t), status) // B, between A and its resend
	release()
	a := <-first
	require.NoError(t, a.err)
	expect(t, a.r, status)
	require.Len(t, link.disarm(), 1)
}
