package rediscoupon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/coupon"
	"github.com/commercekit/commercekit/internal/depfail"
)

// DefaultKeyPrefix prefixes every key the issuer writes.
const DefaultKeyPrefix = "coupon:"

// loadBatch is how many holdings one pipeline of a load writes.
const loadBatch = 1000

// stagingTTL bounds how long a staged state of a load that died half-way survives.
const stagingTTL = time.Hour

// Issuer is the Redis coupon.Issuer (and coupon.Recounter). It is safe for concurrent use.
type Issuer struct {
	rdb    redis.UniversalClient
	prefix string
}

var (
	_ coupon.Issuer    = (*Issuer)(nil)
	_ coupon.Recounter = (*Issuer)(nil)
)

// Option configures an Issuer.
type Option func(*Issuer)

// WithKeyPrefix sets the prefix of the issuer's keys (default DefaultKeyPrefix). Each
// template has one key, prefix + "{" + templateID + "}", with the template ID as its Redis
// Cluster hash tag.
func WithKeyPrefix(prefix string) Option {
	return func(i *Issuer) { i.prefix = prefix }
}

// New returns an issuer on rdb (a *redis.Client, *redis.ClusterClient or any
// redis.UniversalClient, configured as the caller wishes).
func New(rdb redis.UniversalClient, opts ...Option) *Issuer {
	i := &Issuer{rdb: rdb, prefix: DefaultKeyPrefix}
	for _, opt := range opts {
		opt(i)
	}
	return i
}

// JoinsTx is false: the take happens in Redis, before and outside the SQL transaction that
// writes the coupon.
func (*Issuer) JoinsTx() bool { return false }

// redisErr names the failed operation; Redis being unreachable or too slow matches
// errcode.ErrUnavailable (the caller answers "retry later", never a business outcome).
func redisErr(op string, err error) error {
	return depfail.Wrap("redis", fmt.Errorf("rediscoupon: %s: %w", op, err))
}

func (i *Issuer) key(templateID string) string { return i.prefix + "{" + templateID + "}" }

// Take runs the take script: one atomic step that recognises a request already taken,
// checks the total and the user's count, and takes the user's first free ordinal.
func (i *Issuer) Take(ctx context.Context, r coupon.TakeRequest) (coupon.Taken, error) {
	tpl := r.Template
	res, err := takeScript.Run(ctx, i.rdb, []string{i.key(tpl.ID)},
		r.UserID, r.RequestID, tpl.TotalQuantity, tpl.PerUserLimit).Int64Slice()
	if err != nil {
		return coupon.Taken{}, redisErr("take", err)
	}
	if len(res) != 2 {
		return coupon.Taken{}, fmt.Errorf("rediscoupon: take: unexpected reply %v", res)
	}
	reject := &coupon.IssueError{TemplateID: tpl.ID, UserID: r.UserID, RequestID: r.RequestID}
	switch res[0] {
	case codeTaken, codeReplay:
		return coupon.Taken{Ordinal: int(res[1]), Replay: res[0] == codeReplay}, nil
	case codeNotLoaded:
		return coupon.Taken{}, coupon.ErrNotLoaded
	case codeSoldOut:
		reject.Err, reject.Total = coupon.ErrSoldOut, tpl.TotalQuantity
	case codeLimit:
		reject.Err, reject.Limit = coupon.ErrLimitReached, tpl.PerUserLimit
	case codeOtherUser:
		reject.Err = coupon.ErrRequestConflict
	default:
		return coupon.Taken{}, fmt.Errorf("rediscoupon: take: unexpected reply %v", res)
	}
	return coupon.Taken{}, reject
}

// GiveBack runs the give-back script: if the request still holds its take, the unit returns
// to the count and the ordinal to the user, unless another attempt at the request (one
// whose take was a replay) may still write the coupon: then only that attempt's failure
// gives it back.
func (i *Issuer) GiveBack(ctx context.Context, r coupon.TakeRequest) error {
	if err := giveBackScript.Run(ctx, i.rdb, []string{i.key(r.Template.ID)}, r.RequestID).Err(); err != nil {
		return redisErr("give back", err)
	}
	return nil
}

// Forget drops the request's record but keeps its unit and ordinal taken.
func (i *Issuer) Forget(ctx context.Context, r coupon.TakeRequest) error {
	if err := i.rdb.HDel(ctx, i.key(r.Template.ID), "r|"+r.RequestID, "w|"+r.RequestID).Err(); err != nil {
		return redisErr("forget", err)
	}
	return nil
}

// Taken returns the template's count in Redis, or coupon.ErrNotLoaded when Redis has no
// state for it.
func (i *Issuer) Taken(ctx context.Context, _ bun.IDB, templateID string) (int64, error) {
	n, err := i.rdb.HGet(ctx, i.key(templateID), "taken").Int64()
	if errors.Is(err, redis.Nil) {
		return 0, coupon.ErrNotLoaded
	}
	if err != nil {
		return 0, redisErr("taken", err)
	}
	return n, nil
}

// Load builds the template's state from holdings in a staging key, then installs it in one
// atomic step: with onlyIfMissing, only when no state exists (a racing load won);
// otherwise replacing whatever is there.
func (i *Issuer) Load(ctx context.Context, _ bun.IDB, tpl coupon.Template, holdings iter.Seq2[coupon.Holding, error], onlyIfMissing bool) error {
	live := i.key(tpl.ID)
	var suffix [8]byte
	_, _ = rand.Read(suffix[:])
	staging := live + ":load:" + hex.EncodeToString(suffix[:])
	if err := i.rdb.Del(ctx, staging).Err(); err != nil {
		return redisErr("load", err)
	}
	var n int64
	pipe := i.rdb.Pipeline()
	flush := func() error {
		pipe.Expire(ctx, staging, stagingTTL)
		if _, err := pipe.Exec(ctx); err != nil {
			return redisErr("load", err)
		}
		return nil
	}
	for h, err := range holdings {
		if err != nil {
			i.rdb.Del(context.WithoutCancel(ctx), staging)
			return depfail.Wrap("database", fmt.Errorf("rediscoupon: load: reading holdings: %w", err))
		}
		ord := strconv.Itoa(h.Ordinal)
		pipe.HSet(ctx, staging, "o|"+ord+"|"+h.UserID, h.RequestID, "r|"+h.RequestID, ord+"|"+h.UserID)
		pipe.HIncrBy(ctx, staging, "n|"+h.UserID, 1)
		if n++; n%loadBatch == 0 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	keep := "0"
	if onlyIfMissing {
		keep = "1"
	}
	if err := installScript.Run(ctx, i.rdb, []string{live, staging}, n, keep).Err(); err != nil {
		return redisErr("load", err)
	}
	return nil
}
