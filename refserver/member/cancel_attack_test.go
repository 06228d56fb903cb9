package member_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/refserver/member"
)

// TestCancelledLoginsCostNoFailures: a login whose client goes away before its password is
// checked — while it waits for its member read, or for its address's turn — takes nothing
// from the login ID's failure budget. The login ID's token is taken before both waits and
// must be given back although the login's context has ended; a refund sent on the ended
// context fails in Redis, and then anyone could lock a member out from one address by
// sending logins and hanging up, with no password checked and no token taken from that
// address's own budget (which is taken only in the address's turn). Each limiter, with
// the login ID's whole budget (2) spent by such logins: the member still logs in.
func TestCancelledLoginsCostNoFailures(t *testing.T) {
	db, rdb := testenv.MySQL(t), testenv.Redis(t)
	require.NoError(t, member.CreateSchema(ctx, db))
	for name, limiter := range map[string]member.Limiter{"memory": member.NewMemoryLimiter(), "redis": member.NewRedisLimiter(rdb)} {
		t.Run(name, func(t *testing.T) {
			victim := "victim-" + name
			opts := []member.Option{member.WithBcryptCost(bcrypt.MinCost), member.WithLimiter(limiter),
				member.WithLoginLimits(2, 100, time.Hour)}
			deny := member.NewSQLDenylist(db, nil)
			svc := testkit.Must(member.New(db, deny, secret, opts...))(t)
			_, err := svc.SignUp(ctx, victim, "correct horse")
			require.NoError(t, err)
			stall := &stallReads{held: make(chan struct{}, 1), release: make(chan struct{})}
			stalled := testkit.Must(member.New(db.WithQueryHook(stall), deny, secret, opts...))(t)
			for range 2 {
				attempt, hangUp := context.WithCancel(ctx)
				errc := make(chan error, 1)
				go func() {
					_, err := stalled.Login(attempt, victim, "a guess", "203.0.113.9")
					errc <- err
				}()
				<-stall.held // the member read is under way
				hangUp()
				stall.release <- struct{}{}
				require.ErrorIs(t, <-errc, context.Canceled)
			}
			_, err = svc.Login(ctx, victim, "correct horse", "198.51.100.1")
			require.NoError(t, err, "no password of the member's was checked")
		})
	}
}
