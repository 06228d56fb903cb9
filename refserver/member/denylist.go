package member

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/errcode"
	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Denylist holds the IDs (jti) of access tokens revoked before they expire. An entry is
// needed only until its token expires; after that the token fails its expiry check anyway.
type Denylist interface {
	// Deny adds jti until the time its token expires.
	Deny(ctx context.Context, jti string, until time.Time) error
	// Denied reports whether jti is on the list. An error means the list could not answer.
	Denied(ctx context.Context, jti string) (bool, error)
}

// RedisDenylist keeps the denylist in Redis: one key per token, expiring with the token.
// It is the denylist of full mode.
type RedisDenylist struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewRedisDenylist returns a denylist in rdb under keys "commercekit:denied:<jti>".
func NewRedisDenylist(rdb redis.UniversalClient) *RedisDenylist {
	return &RedisDenylist{rdb: rdb, prefix: "commercekit:denied:"}
}

// Deny implements Denylist. A token already expired (by the wall clock Redis expires keys
// with) needs no entry.
func (d *RedisDenylist) Deny(ctx context.Context, jti string, until time.Time) error {
	if !until.After(time.Now()) {
		return nil
	}
	if err := d.rdb.SetArgs(ctx, d.prefix+jti, "1", redis.SetArgs{ExpireAt: until}).Err(); err != nil {
		return errcode.Unavailable("redis", fmt.Errorf("member: deny token: %w", err))
	}
	return nil
}

// Denied implements Denylist.
func (d *RedisDenylist) Denied(ctx context.Context, jti string) (bool, error) {
	n, err := d.rdb.Exists(ctx, d.prefix+jti).Result()
	if err != nil {
		return false, errcode.Unavailable("redis", fmt.Errorf("member: check the denylist: %w", err))
	}
	return n > 0, nil
}

// SQLDenylist keeps the denylist in a table (member_denied_tokens; CreateSchema creates
// it): the denylist of the embedded default. Purge deletes the entries of expired tokens.
type SQLDenylist struct {
	db  bun.IDB
	now func() time.Time
}

// NewSQLDenylist returns a denylist in db; now is the clock deciding which entries are
// expired (nil: time.Now).
func NewSQLDenylist(db bun.IDB, now func() time.Time) *SQLDenylist {
	if now == nil {
		now = time.Now
	}
	return &SQLDenylist{db: db, now: now}
}

type deniedRow struct {
	bun.BaseModel `bun:"table:member_denied_tokens"`

	JTI       string `bun:"jti,pk"`
	ExpiresAt int64  `bun:"expires_at"`
}

// Deny implements Denylist.
func (d *SQLDenylist) Deny(ctx context.Context, jti string, until time.Time) error {
	_, err := d.db.NewInsert().Model(&deniedRow{JTI: jti, ExpiresAt: until.UnixMicro()}).Exec(ctx)
	if err != nil && !sqlutil.IsDuplicateKey(err) {
		return errcode.Unavailable("database", fmt.Errorf("member: deny token: %w", err))
	}
	return nil
}

// Denied implements Denylist.
func (d *SQLDenylist) Denied(ctx context.Context, jti string) (bool, error) {
	n, err := d.db.NewSelect().Model((*deniedRow)(nil)).Where("jti = ?", jti).Count(ctx)
	if err != nil {
		return false, errcode.Unavailable("database", fmt.Errorf("member: check the denylist: %w", err))
	}
	return n > 0, nil
}

// Purge deletes the entries of tokens expired by now and returns how many.
func (d *SQLDenylist) Purge(ctx context.Context) (int64, error) {
	res, err := d.db.NewDelete().Model((*deniedRow)(nil)).Where("expires_at <= ?", d.now().UnixMicro()).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("member: purge the denylist: %w", err)
	}
	return res.RowsAffected()
}

// RunPurger calls Purge every interval until ctx is done; it returns ctx's error. Failed
// purges are retried at the next tick (an entry kept longer is harmless).
func (d *SQLDenylist) RunPurger(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			_, _ = d.Purge(ctx)
		}
	}
}
