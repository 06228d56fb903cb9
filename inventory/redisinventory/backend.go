package redisinventory

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/option"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/internal/groupcommit"
	"github.com/commercekit/commercekit/inventory/internal/sqlrow"
)

// DefaultTag is the hash tag of a Backend's keys unless WithTag says otherwise.
const DefaultTag = "inventory"

// DefaultRetention is how long resolved reservations and adjustment IDs are kept for
// idempotent replays unless WithRetention says otherwise.
const DefaultRetention = 24 * time.Hour

// scriptLanes is how many combined reserve script calls may be in flight at once: Redis
// runs one at a time, and the other keeps it busy while a reply travels back. More lanes
// make smaller batches, and since the script does per batch what it can, each reservation
// then costs Redis more: BenchmarkHotSKU measured 8-11 µs of Redis CPU per reservation
// with 1 or 2 lanes against 10.5-13 with 4, and the best rates with 1 or 2.
const scriptLanes = 2

// Backend keeps stock and reservations in Redis, every operation one Lua script. It
// implements inventory.Backend; it cannot join a SQL transaction.
type Backend struct {
	c         redis.UniversalClient
	prefix    string // "{tag}:"
	due       string // the due index: reservation IDs scored by deadline (ms)
	skus      string // the set of every SKU, for WriteBack
	retention time.Duration
	s         scripts
	g         guardedScripts
	log       *slog.Logger
	// rebuildWait is a Durable's WithRebuildWait.
	rebuildWait time.Duration
	// group combines concurrent reservations into one script call.
	group *groupcommit.Committer
}

var _ inventory.Backend = (*Backend)(nil)

// Option configures a Backend (or a Durable).
type Option func(*settings)

type settings struct {
	option.Errors
	tag         string
	retention   time.Duration
	log         *slog.Logger
	rebuildWait time.Duration
}

// WithTag sets the hash tag every key of the Backend carries (default DefaultTag), which
// puts them all in one Redis Cluster slot. Backends with different tags are independent
// inventories and may live on different cluster nodes. It must not be empty nor contain
// '{' or '}'.
func WithTag(tag string) Option {
	return func(s *settings) {
		if tag == "" || strings.ContainsAny(tag, "{}") {
			s.Reject("WithTag", fmt.Sprintf("%q is empty or holds a brace", tag))
			return
		}
		s.tag = tag
	}
}

// WithRetention sets how long a resolved reservation and an adjustment ID are kept, which
// is how long a replay is recognised (default DefaultRetention; 0 keeps them forever). It
// must not be negative.
func WithRetention(d time.Duration) Option {
	return func(s *settings) {
		if d < 0 {
			s.Reject("WithRetention", fmt.Sprintf("%v is negative", d))
			return
		}
		s.retention = d
	}
}

// WithLogger sets the logger of a Durable's rebuilds and healer (default: discard). It must
// not be nil.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) { option.NotNil(&s.Errors, &s.log, "WithLogger", l) }
}

// WithRebuildWait sets how long a Durable's change whose Redis step the generation guard
// refused (a rebuild is under way, in any process, or happened) waits for the rebuild
// lock before it gives up (default DefaultRebuildWait). Giving up, unless a rebuild has
// read the change already, answers the caller 503 (errcode.ErrUnavailable, with
// DependencyRebuilding's Retry-After) and asks for a rebuild, which applies the change
// from the journal (see Durable.Release). A plain Backend ignores it. It must be
// positive.
func WithRebuildWait(d time.Duration) Option {
	return func(s *settings) {
		if d <= 0 {
			s.Reject("WithRebuildWait", fmt.Sprintf("%v is not positive", d))
			return
		}
		s.rebuildWait = d
	}
}

// New returns a Backend on c (a *redis.Client, *redis.ClusterClient, ...), whose own
// configuration (pool size, timeouts) is used untouched. An invalid option value is an
// *errcode.InvalidError naming the option.
func New(c redis.UniversalClient, opts ...Option) (*Backend, error) {
	cfg := settings{tag: DefaultTag, retention: DefaultRetention, log: slog.New(slog.DiscardHandler), rebuildWait: DefaultRebuildWait}
	if err := option.Apply(&cfg, opts); err != nil {
		return nil, fmt.Errorf("redisinventory: %w", err)
	}
	b := &Backend{c: c, prefix: "{" + cfg.tag + "}:", retention: cfg.retention, s: newScripts(), g: newGuardedScripts(),
		log: cfg.log, rebuildWait: cfg.rebuildWait}
	b.due, b.skus = b.prefix+"due", b.prefix+"skus"
	b.group = groupcommit.New(b.reserveMany)
	b.group.SetLanes(scriptLanes)
	return b, nil
}

func (b *Backend) stockKey(sku string) string { return b.prefix + "stock:" + sku }
func (b *Backend) usageKey(sku string) string { return b.prefix + "buyers:" + sku }
func (b *Backend) resKey(id string) string    { return b.prefix + "res:" + id }
func (b *Backend) adjKey(id string) string    { return b.prefix + "adj:" + id }

// fail returns the context's error when it is done, else err wrapped with op (and
// matching errcode.ErrUnavailable when Redis could not be reached or did not answer:
// depfail).
func fail(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("redisinventory: %s: %w", op, depfail.Wrap("redis", err))
}

// failIf is fail for a non-nil err, else nil.
func failIf(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	return fail(ctx, op, err)
}

// toInt reads an integer from a script or HMGET reply element (integer or bulk string).
func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

func toString(v any) string {
	s, _ := v.(string)
	return s
}

func fromMillis(ms int64) time.Time { return sqlrow.Time(ms) }

// stockFrom builds a Stock from the values of stockFields: onhand, available, sold, limit.
func stockFrom(sku string, v []any) inventory.Stock {
	st := inventory.Stock{SKU: sku, OnHand: toInt(v[0]), Available: toInt(v[1]), Sold: toInt(v[2]), BuyerLimit: toInt(v[3])}
	st.Reserved = st.OnHand - st.Available
	return st
}
