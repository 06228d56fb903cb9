package member_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/refserver/member"
)

// held counts the password work under way and holds each until released.
type held struct {
	in, most atomic.Int64
	release  chan struct{}
}

func (h *held) hook() {
	n := h.in.Add(1)
	for m := h.most.Load(); n > m && !h.most.CompareAndSwap(m, n); m = h.most.Load() {
	}
	<-h.release
	h.in.Add(-1)
}

// TestPasswordWorkTakesTurns: bcrypt is the costliest thing a request can ask of the
// server, and sign-up asked it of anyone: a burst of sign-ups from one address (40 at
// once within the write limit's burst, then 20/s) hashed all at once, taking every core
// from the checkouts. Sign-ups now take turns per address, as password checks of logins
// did, and the password work of all addresses together is capped (WithPasswordChecks), so
// that it cannot take the whole machine.
func TestPasswordWorkTakesTurns(t *testing.T) {
	const n = 5
	for _, tc := range []struct {
		name    string
		addr    func(i int) string
		running int
	}{
		{"one address", func(int) string { return "10.0.0.9" }, 1},
		{"many addresses", func(i int) string { return fmt.Sprintf("10.0.1.%d", i) }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := testenv.SQLite(t)
			require.NoError(t, member.CreateSchema(ctx, db))
			h := &held{release: make(chan struct{})}
			svc, err := member.New(db, member.NewSQLDenylist(db, nil), secret, member.WithBcryptCost(bcrypt.MinCost),
				member.WithPasswordChecks(2), member.WithPasswordWorkHook(h.hook))
			require.NoError(t, err)
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() {
					_, errs[i] = svc.SignUpOnce(ctx, fmt.Sprintf("user%d", i), "correct horse", "", tc.addr(i))
				})
			}
			var release sync.Once
			t.Cleanup(func() { release.Do(func() { close(h.release) }) })
			var hashing, waiting int
			assert.Eventually(t, func() bool {
				hashing, waiting = int(h.in.Load()), svc.PasswordWorkWaiting()
				return hashing+waiting == n
			}, 10*time.Second, time.Millisecond, "every sign-up hashing or waiting")
			assert.Equal(t, []int{tc.running, n - tc.running}, []int{hashing, waiting}, "hashing, waiting")
			release.Do(func() { close(h.release) })
			wg.Wait()
			for _, err := range errs {
				require.NoError(t, err)
			}
			assert.Equal(t, int64(tc.running), h.most.Load(), "the most hashing at once")
			count, err := db.NewSelect().Table("members").Count(ctx)
			require.NoError(t, err)
			assert.EqualValues(t, n, count, "every sign-up recorded once")
		})
	}
}
