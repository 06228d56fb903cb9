package redisidempotency

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/payment/idempotency"
)

// DefaultKeyPrefix starts the name of every Redis key the backend writes.
const DefaultKeyPrefix = "commercekit:payment:idempotency:"

// TombstoneTTL is how long a released token is remembered, so that a claim with it that a
// stalled Redis runs late changes nothing. A claim arriving later than that finds its own
// lock expired (unless the lock timeout is longer), so a retry takes the key over.
const TombstoneTTL = 10 * time.Minute

// Backend is an idempotency.Backend on Redis: one hash per key, every operation one Lua
// script (atomic, EVALSHA with a fallback to EVAL when the server has not cached it). It is
// safe for concurrent use.
type Backend struct {
	client redis.UniversalClient
	prefix string
}

var _ idempotency.Backend = (*Backend)(nil)

// Option configures a Backend.
type Option func(*Backend)

// WithKeyPrefix sets the prefix of the backend's Redis keys (default DefaultKeyPrefix), to
// keep two stores on one Redis apart.
func WithKeyPrefix(p string) Option { return func(b *Backend) { b.prefix = p } }

// New returns a backend on client, which may be a plain client, a cluster client or a
// failover client, configured as the caller likes.
func New(client redis.UniversalClient, opts ...Option) *Backend {
	b := &Backend{client: client, prefix: DefaultKeyPrefix}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Key returns the Redis key of ref's record: the prefix, then ref.ID() in braces. The braces
// are a hash tag: in a cluster, every key the backend may ever keep for one ref is in one
// slot, while the refs spread over all slots.
func (b *Backend) Key(ref idempotency.Ref) string { return b.prefix + "{" + ref.ID() + "}" }

// tombstone returns the key remembering that token was released (in ref's hash slot).
func (b *Backend) tombstone(ref idempotency.Ref, token string) string {
	return b.Key(ref) + ":released:" + token
}

// JoinsTx reports false: Redis cannot join a SQL transaction.
func (b *Backend) JoinsTx() bool { return false }

// Claim implements idempotency.Backend.
func (b *Backend) Claim(ctx context.Context, q idempotency.ClaimRequest) (idempotency.ClaimOutcome, *idempotency.Record, error) {
	res, err := claimScript.Run(ctx, b.client, []string{b.Key(q.Ref), b.tombstone(q.Ref, q.Token)},
		string(q.Fingerprint), q.Token, ms(q.Now), ms(q.LockedUntil), ms(q.ExpiresAt), ttl(q.Now, q.ExpiresAt)).Slice()
	if err != nil {
		return 0, nil, wrap("claiming a key", err)
	}
	var outcome int64
	if len(res) > 0 {
		outcome, _ = res[0].(int64)
	}
	switch {
	case outcome == 0:
		return 0, nil, fmt.Errorf("redisidempotency: claim: %w (released before the claim arrived)", idempotency.ErrLockLost)
	case outcome < int64(idempotency.ClaimCreated) || outcome > int64(idempotency.ClaimExists):
		return 0, nil, fmt.Errorf("redisidempotency: claim script replied %v", res)
	case outcome == int64(idempotency.ClaimExists):
		rec, err := parseRecord(res[1:])
		if err != nil {
			return 0, nil, err
		}
		return idempotency.ClaimExists, rec, nil
	}
	return idempotency.ClaimOutcome(outcome), nil, nil
}

// parseRecord reads {state, fp, lock, exp, status, code, body} as the claim script returns it.
func parseRecord(v []any) (*idempotency.Record, error) {
	s := make([]string, 7)
	for i := range s {
		if i < len(v) {
			s[i], _ = v[i].(string)
		}
	}
	rec := &idempotency.Record{Fingerprint: idempotency.Fingerprint(s[1]), Done: s[0] == "done"}
	var err error
	if rec.ExpiresAt, err = parseMillis(s[3]); err != nil {
		return nil, err
	}
	if !rec.Done {
		rec.LockedUntil, err = parseMillis(s[2])
		return rec, err
	}
	status, err := strconv.Atoi(s[4])
	if err != nil {
		return nil, fmt.Errorf("redisidempotency: malformed status %q: %w", s[4], err)
	}
	rec.Response = idempotency.Response{Status: status, ErrorCode: s[5], Body: []byte(s[6])}
	return rec, nil
}

// Complete implements idempotency.Backend.
func (b *Backend) Complete(ctx context.Context, q idempotency.CompleteRequest) error {
	n, err := completeScript.Run(ctx, b.client, []string{b.Key(q.Ref)},
		q.Token, q.Response.Status, q.Response.ErrorCode, q.Response.Body, ms(q.ExpiresAt), ttl(q.Now, q.ExpiresAt)).Int()
	if err != nil {
		return wrap("completing a key", err)
	}
	return held(n)
}

// Release implements idempotency.Backend.
func (b *Backend) Release(ctx context.Context, ref idempotency.Ref, token string) error {
	n, err := releaseScript.Run(ctx, b.client, []string{b.Key(ref), b.tombstone(ref, token)}, token, TombstoneTTL.Milliseconds()).Int()
	if err != nil {
		return wrap("releasing a key", err)
	}
	return held(n)
}

// Purge implements idempotency.Backend. Redis deletes each record by itself when its TTL
// (the retention) runs out, so there is nothing to do: it returns 0.
func (b *Backend) Purge(context.Context, time.Time) (int64, error) { return 0, nil }

func ms(t time.Time) int64 { return t.UnixMilli() }

// ttl is the Redis TTL of a record written at now that expires at exp: at least 1 ms, as
// PEXPIRE with 0 would delete it at once.
func ttl(now, exp time.Time) int64 { return max(1, exp.Sub(now).Milliseconds()) }

func parseMillis(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("redisidempotency: malformed time %q: %w", s, err)
	}
	return time.UnixMilli(n).UTC(), nil
}

// held turns a script's 0 (the token holds no running record) into the fencing error.
func held(n int) error {
	if n != 1 {
		return idempotency.ErrLockLost
	}
	return nil
}

// wrap names the failed operation; context errors are returned as they are, and Redis
// being unreachable or too slow matches errcode.ErrUnavailable.
func wrap(op string, err error) error {
	if !depfail.Is(err) && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return err
	}
	return depfail.Wrap("redis", fmt.Errorf("redisidempotency: %s: %w", op, err))
}
