package member

import (
	"context"
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
