package member_test

import (
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/refserver/member"
)

// TestNewRefusesBadOptions: every invalid option value is refused, naming the option.
func TestNewRefusesBadOptions(t *testing.T) {
	db := testenv.SQLite(t)
	construct := func(opts ...member.Option) (*member.Service, error) {
		return member.New(db, member.NewSQLDenylist(db, nil), []byte("secret"), opts...)
	}
	testkit.RefusesBadOptions(t, construct, map[string]member.Option{
		"WithClock: nil":              member.WithClock(nil),
		"WithTokenTTLs: 0s, 1h0m0s":   member.WithTokenTTLs(0, time.Hour),
		"WithTokenTTLs: 1m0s, -1s":    member.WithTokenTTLs(time.Minute, -time.Second),
		"WithBcryptCost: 0":           member.WithBcryptCost(0),
		"WithBcryptCost: 32":          member.WithBcryptCost(bcrypt.MaxCost + 1),
		"WithLoginLimits: 0, 1, 1m0s": member.WithLoginLimits(0, 1, time.Minute),
		"WithLoginLimits: 1, 0, 1m0s": member.WithLoginLimits(1, 0, time.Minute),
		"WithLoginLimits: 1, 1, 0s":   member.WithLoginLimits(1, 1, 0),
		"WithCheckTimeout: 0s":        member.WithCheckTimeout(0),
	}, member.ErrInvalidRequest)
	testkit.Must(construct(member.WithBcryptCost(bcrypt.MinCost), member.WithTokenTTLs(time.Minute, time.Hour),
		member.WithLoginLimits(1, 1, time.Minute), member.WithCheckTimeout(time.Second)))(t)
}
