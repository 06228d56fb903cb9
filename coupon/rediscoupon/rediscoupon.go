package rediscoupon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"iter"
	"strconv"
	"strings"
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

// Name is "redis": every Redis issuer is one issuer, so point them all at one Redis (or
// one cluster) with one key prefix.
func (*Issuer) Name() string { return "redis" }

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
// checks the total and the user's count, and takes the user's first free ordinal and a
// free place.
func (i *Issuer) Take(ctx context.Context, r coupon.TakeRequest) (coupon.Taken, error) {
	tpl := r.Template
	res, err := takeScript.Run(ctx, i.rdb, []string{i.key(tpl.ID)},
		r.UserID, r.RequestID, tpl.TotalQuantity, tpl.PerUserLimit).Int64Slice()
	if err != nil {
		return coupon.Taken{}, redisErr("take", err)
	}
	if len(res) != 3 {
		return coupon.Taken{}, fmt.Errorf("rediscoupon: take: unexpected reply %v", res)
	}
	reject := &coupon.IssueError{TemplateID: tpl.ID, UserID: r.UserID, RequestID: r.RequestID}
	switch res[0] {
	case codeTaken, codeReplay:
		return coupon.Taken{Ordinal: int(res[1]), Place: res[2], Replay: res[0] == codeReplay}, nil
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
// to the count, the ordinal to the user and the place to the free ones, unless another
// attempt at the request (one whose take was a replay) may still write the coupon: then
// only that attempt's failure gives it back.
func (i *Issuer) GiveBack(ctx context.Context, r coupon.TakeRequest) error {
	if err := giveBackScript.Run(ctx, i.rdb, []string{i.key(r.Template.ID)}, r.RequestID).Err(); err != nil {
		return redisErr("give back", err)
	}
	return nil
}

// Adopt runs the adopt script: the coupons of held that the state does not know are
// counted, with their ordinals and places, then the request's take is given back as
// GiveBack does, in one atomic step.
func (i *Issuer) Adopt(ctx context.Context, r coupon.TakeRequest, held []coupon.Holding) (int, error) {
	args := make([]any, 0, 2+4*len(held))
	args = append(args, r.RequestID, r.Template.TotalQuantity)
	for _, h := range held {
		args = append(args, h.UserID, h.Ordinal, h.Place, h.RequestID)
	}
	n, err := adoptScript.Run(ctx, i.rdb, []string{i.key(r.Template.ID)}, args...).Int()
	if err != nil {
		return 0, redisErr("adopt", err)
	}
	return n, nil
}

// Taken returns the template's count in Redis, or coupon.ErrNotLoaded when Redis has no
// state for it (or one of an earlier version, without places).
func (i *Issuer) Taken(ctx context.Context, _ bun.IDB, templateID string) (int64, error) {
	vals, err := i.rdb.HMGet(ctx, i.key(templateID), "taken", "top").Result()
	if err != nil {
		return 0, redisErr("taken", err)
	}
	taken, ok := vals[0].(string)
	if _, loaded := vals[1].(string); !ok || !loaded {
		return 0, coupon.ErrNotLoaded
	}
	n, err := strconv.ParseInt(taken, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("rediscoupon: taken: %w", err)
	}
	return n, nil
}

// Load builds the template's state from holdings in a staging key (the places below the
// highest held that no holding has are free), then installs it in one atomic step: with
// onlyIfMissing, only when no state exists (a racing load won); otherwise replacing
// whatever is there.
func (i *Issuer) Load(ctx context.Context, _ bun.IDB, tpl coupon.Template, holdings iter.Seq2[coupon.Holding, error], onlyIfMissing bool) error {
	live := i.key(tpl.ID)
	var suffix [8]byte
	_, _ = rand.Read(suffix[:])
	staging := live + ":load:" + hex.EncodeToString(suffix[:])
	if err := i.rdb.Del(ctx, staging).Err(); err != nil {
		return redisErr("load", err)
	}
	var n, top int64
	held := make(map[int64]bool) // the places held, for a template with a total
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
		if h.Place > 0 && h.Place <= tpl.TotalQuantity {
			place := strconv.FormatInt(h.Place, 10)
			pipe.HSet(ctx, staging, "p|"+place, h.RequestID, "q|"+h.RequestID, place)
			held[h.Place] = true
			top = max(top, h.Place)
		}
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
	var free []string
	for p := int64(1); p < top; p++ {
		if !held[p] {
			free = append(free, strconv.FormatInt(p, 10))
		}
	}
	if err := installScript.Run(ctx, i.rdb, []string{live, staging}, n, keep, top, strings.Join(free, ",")).Err(); err != nil {
		return redisErr("load", err)
	}
	return nil
}
