package member

import (
	"context"
	"errors"
	"time"

	"github.com/uptrace/bun"
)

// WithDenylistClock sets the clock a RedisDenylist times its publish check by.
func WithDenylistClock(now func() time.Time) RedisDenylistOption {
	return func(d *RedisDenylist) { d.now = now }
}

// RecordUnpublished records the denials of jtis until until, unpublished, in one
// transaction, as a session's revocation does.
func RecordUnpublished(ctx context.Context, db bun.IDB, until time.Time, jtis ...string) error {
	entries := make([]deniedRow, len(jtis))
	for i, jti := range jtis {
		entries[i] = deniedRow{JTI: jti, ExpiresAt: until.UnixMicro()}
	}
	return NewSQLDenylist(db, nil).record(ctx, true, entries...)
}

// ErrDied is what the denylist of Died answers.
var ErrDied = errors.New("the server died")

// Died returns d as the denylist of a server that dies after a revocation committed and
// before any of its denials reached Redis: it records as d does, and writes nothing after.
func Died(d *RedisDenylist) Denylist { return died{d} }

type died struct{ *RedisDenylist }

func (died) Deny(context.Context, string, time.Time) error       { return ErrDied }
func (died) Denied(context.Context, string) (bool, error)        { return false, ErrDied }
func (died) publishRecorded(context.Context, ...deniedRow) error { return ErrDied }

// WithPasswordWorkHook has hook run just before each bcrypt hash or comparison, in its turn.
func WithPasswordWorkHook(hook func()) Option {
	return func(s *settings) { s.workHook = hook }
}

// PasswordWorkWaiting is how many sign-ups and logins wait for their turn to hash or
// compare a password.
func (s *Service) PasswordWorkWaiting() int { return int(s.waiting.Load()) }
