package redisinventory

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/internal/groupcommit"
)

// Reserve runs the reserve script: one round trip, shared with the reservations that
// arrive meanwhile. Reservations that queue while a call is in progress go together in
// the next call (groupcommit, with the reserveMany script), each with its own answer; a
// reservation that finds no call in progress goes at once.
func (b *Backend) Reserve(ctx context.Context, r inventory.Reservation) (inventory.Reservation, error) {
	return b.group.Reserve(ctx, "", r)
}

// reserveMany runs the reserve script of each call, in one script call.
func (b *Backend) reserveMany(ctx context.Context, calls []*groupcommit.Call, _ func()) {
	replies, err := b.runReserveMany(ctx, b.s.reserveMany, calls, nil)
	for i, c := range calls {
		if err != nil {
			c.Err = fail(c.Ctx, "reserve", err)
			continue
		}
		c.Out, c.Err = reserveReply(c.R, replies[i])
	}
}

// runReserveMany runs script, reserveManyLua or its guarded form, for calls, with
// tailKeys and tailArgs (a guard's) appended, and returns each call's reply; errLost when
// the guard refused.
func (b *Backend) runReserveMany(ctx context.Context, script *redis.Script, calls []*groupcommit.Call, tailKeys []string, tailArgs ...any) ([]any, error) {
	nk, na := 1+len(tailKeys), 1+len(tailArgs)
	for _, c := range calls {
		nk += 1 + 2*len(c.R.Lines)
		na += 6 + len(c.R.Lines)
	}
	keys := make([]string, 1, nk)
	keys[0] = b.due
	args := make([]any, 1, na)
	args[0] = len(calls)
	for _, c := range calls {
		r := c.R
		keys = append(keys, b.resKey(r.ID))
		args = append(args, len(r.Lines), r.ID, inventory.EncodeLines(r.Lines), r.BuyerID, r.CreatedAt.UnixMilli(), r.ExpiresAt.UnixMilli())
		keys, args = b.lineKeys(r, keys, args)
	}
	replies, err := script.Run(ctx, b.c, append(keys, tailKeys...), append(args, tailArgs...)...).Slice()
	switch {
	case err != nil:
		return nil, err
	case len(replies) == 1 && toInt(replies[0]) == -9: // the guard's {-9}; a reservation's reply is 1 or a list
		return nil, errMarker
	case len(replies) != len(calls):
		return nil, fmt.Errorf("%d replies to %d reservations", len(replies), len(calls))
	}
	return replies, nil
}

// reserveReply turns the reserve script's reply into the reservation or its error;
// errLost for the guard's {-9}.
func reserveReply(r inventory.Reservation, reply any) (inventory.Reservation, error) {
	res, ok := reply.([]any)
	if !ok { // 1: reserved
		return r, nil
	}
	line := func() inventory.Line { return r.Lines[toInt(res[1])-1] }
	switch toInt(res[0]) {
	case 0:
		r.State = inventory.State(toString(res[1]))
		r.CreatedAt, r.ExpiresAt, r.ResolvedAt = fromMillis(toInt(res[2])), fromMillis(toInt(res[3])), fromMillis(toInt(res[4]))
		return r, nil
	case -1:
		return inventory.Reservation{}, inventory.NewConflictError("reservation", r.ID)
	case -2:
		return inventory.Reservation{}, &inventory.UnknownSKUError{SKU: line().SKU}
	case -3:
		l := line()
		return inventory.Reservation{}, &inventory.InsufficientStockError{SKU: l.SKU, Requested: l.Qty, Available: toInt(res[2])}
	case -4:
		l := line()
		return inventory.Reservation{}, &inventory.BuyerLimitError{SKU: l.SKU, BuyerID: r.BuyerID, Limit: toInt(res[2]), Used: toInt(res[3]), Requested: l.Qty}
	case -9:
		return inventory.Reservation{}, errLost
	}
	return inventory.Reservation{}, fmt.Errorf("redisinventory: reserve: unexpected reply %v", res)
}

// Commit reads the reservation and runs the commit script: two round trips.
func (b *Backend) Commit(ctx context.Context, id string, now time.Time) (inventory.State, error) {
	st, _, err := b.resolve(ctx, "commit", b.s.commit, id, now)
	return st, err
}

// Release reads the reservation and runs the release script: two round trips.
func (b *Backend) Release(ctx context.Context, id string, now time.Time) (inventory.State, error) {
	st, _, err := b.resolve(ctx, "release", b.s.release, id, now)
	return st, err
}

// Return reads the reservation and runs the settle script from committed to returned: two
// round trips. Like every resolved reservation, a returned one is kept for the retention
// period only; after that a replay finds no reservation (ErrReservationNotFound) and moves
// nothing. The journaled backend (NewDurable) keeps them for ever in SQL.
func (b *Backend) Return(ctx context.Context, id string, now time.Time) (inventory.State, error) {
	v, err := b.c.HMGet(ctx, b.resKey(id), "state", "lines", "buyer", "created", "expires").Result()
	if err != nil {
		return "", fail(ctx, "return", err)
	}
	if v[0] == nil {
		return "", inventory.NotFound(id)
	}
	if st := inventory.State(toString(v[0])); st != inventory.StateCommitted {
		return st, nil
	}
	lines, err := inventory.DecodeLines(toString(v[1]))
	if err != nil {
		return "", fail(ctx, "return", err)
	}
	r := inventory.Reservation{ID: id, Lines: lines, BuyerID: toString(v[2]),
		CreatedAt: fromMillis(toInt(v[3])), ExpiresAt: fromMillis(toInt(v[4]))}
	out, err := b.settle(ctx, r, settleArgs{to: inventory.StateReturned, need: inventory.StateCommitted}, now)
	if err != nil {
		return "", fail(ctx, "return", err)
	}
	return out, nil
}

// resolveAttempts bounds how often resolve reads a reservation again because it changed
// between the read and the script (only possible when its record expired and its ID was
// reserved anew in between).
const resolveAttempts = 3

// resolve reads the reservation to learn its keys (lines and buyer), then runs script with
// them; the script checks the record still matches what was read. It returns the final
// state and whether this call moved the reservation there.
func (b *Backend) resolve(ctx context.Context, op string, script *redis.Script, id string, now time.Time) (inventory.State, bool, error) {
	key := b.resKey(id)
	for range resolveAttempts {
		v, err := b.c.HMGet(ctx, key, "state", "lines", "buyer").Result()
		if err != nil {
			return "", false, fail(ctx, op, err)
		}
		if v[0] == nil {
			return "", false, inventory.NotFound(id)
		}
		if st := inventory.State(toString(v[0])); st != inventory.StateReserved {
			return st, false, nil
		}
		encoded, buyer := toString(v[1]), toString(v[2])
		lines, err := inventory.DecodeLines(encoded)
		if err != nil {
			return "", false, fail(ctx, op, err)
		}
		keys := make([]string, 2, 2+2*len(lines))
		keys[0], keys[1] = key, b.due
		args := make([]any, 5, 5+len(lines))
		args[0], args[1], args[2], args[3], args[4] = id, encoded, buyer, now.UnixMilli(), b.retention.Milliseconds()
		for _, l := range lines {
			keys = append(keys, b.stockKey(l.SKU))
			args = append(args, l.Qty)
		}
		if buyer != "" {
			for _, l := range lines {
				keys = append(keys, b.usageKey(l.SKU))
			}
		}
		out, err := script.Run(ctx, b.c, keys, args...).Text()
		if err != nil {
			return "", false, fail(ctx, op, err)
		}
		switch out {
		case "missing":
			return "", false, inventory.NotFound(id)
		case "stale":
			continue
		}
		if was, ok := strings.CutPrefix(out, "was "); ok {
			return inventory.State(was), false, nil
		}
		return inventory.State(out), out != string(inventory.StateReserved), nil
	}
	return "", false, fmt.Errorf("redisinventory: %s: reservation %q changed %d times while being resolved", op, id, resolveAttempts)
}

// Expire takes up to limit due IDs from the due index and runs the expire script on each.
// Concurrent sweepers are safe: the script expires a reservation once, and only the
// sweeper whose script moved it counts it.
func (b *Backend) Expire(ctx context.Context, now time.Time, limit int) (int, error) {
	ids, err := b.c.ZRangeByScore(ctx, b.due, &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: int64(limit),
	}).Result()
	if err != nil {
		return 0, fail(ctx, "expire", err)
	}
	n := 0
	for _, id := range ids {
		st, moved, err := b.resolve(ctx, "expire", b.s.expire, id, now)
		switch {
		case err == nil && moved:
			n++
		case err == nil && st == inventory.StateReserved:
			// Not due after all; its entry stays.
		case err == nil || errors.Is(err, inventory.ErrReservationNotFound):
			// Resolved meanwhile (its script removed it) or a record gone without its index
			// entry: drop the entry, if any is left.
			if err := b.c.ZRem(ctx, b.due, id).Err(); err != nil {
				return n, fail(ctx, "expire", err)
			}
		default:
			return n, err
		}
	}
	return n, nil
}

// Get reads a reservation's record.
func (b *Backend) Get(ctx context.Context, id string) (inventory.Reservation, error) {
	v, err := b.c.HMGet(ctx, b.resKey(id), "state", "lines", "buyer", "created", "expires", "resolved").Result()
	if err != nil {
		return inventory.Reservation{}, fail(ctx, "get", err)
	}
	if v[0] == nil {
		return inventory.Reservation{}, inventory.NotFound(id)
	}
	lines, err := inventory.DecodeLines(toString(v[1]))
	if err != nil {
		return inventory.Reservation{}, fail(ctx, "get", err)
	}
	return inventory.Reservation{
		ID: id, Lines: lines, BuyerID: toString(v[2]), State: inventory.State(toString(v[0])),
		CreatedAt: fromMillis(toInt(v[3])), ExpiresAt: fromMillis(toInt(v[4])), ResolvedAt: fromMillis(toInt(v[5])),
	}, nil
}

// errLost says a script found the generation marker missing or different, or a stock key
// gone: Redis lost data, or a rebuild is under way.
var errLost = errors.New("redisinventory: Redis lost its data or is being rebuilt")

// errMarker is errLost for the guard's refusal: Redis's generation marker is not the
// generation the caller holds (gone, being rebuilt, or moved on). Unlike a key missing
// under a good marker, which only the caller can tell, a heal sees it by itself (the marker
// is not the journal's generation), so it forces no rebuild (see Durable.lost).
var errMarker = fmt.Errorf("%w: the generation marker is not the caller's", errLost)

// errStale says the reservation record changed under the caller (another reservation's
// record, or one renewed since it was read).
var errStale = errors.New("redisinventory: reservation record changed")

// settleArgs say where settleManyLua moves a reservation.
type settleArgs struct {
	to inventory.State
	// need is the only state it may move from ("" any); fallback the state to assume when
	// the record is gone ("": ErrReservationNotFound).
	need, fallback inventory.State
	// expires, when not zero, is the deadline the record must still have.
	expires time.Time
}

// settling is one reservation settleManyLua moves: r, with the keys and arguments of a,
// at now.
type settling struct {
	r   inventory.Reservation
	a   settleArgs
	now time.Time
}

// settle runs settleManyLua for r alone; see settleMany.
func (b *Backend) settle(ctx context.Context, r inventory.Reservation, a settleArgs, now time.Time, guard ...string) (inventory.State, error) {
	states, errs, err := b.settleMany(ctx, []settling{{r: r, a: a, now: now}}, guard...)
	if err != nil {
		return "", err
	}
	return states[0], errs[0]
}

// settleMany runs settleManyLua for ss in one call (guarded with the marker and generation
// when guard holds them) and returns the state each reservation is in after it, or its
// own error (inventory.NotFound, errStale, errLost: a stock key is gone). err fails them
// all: the call failed, or the guard refused it (errLost).
func (b *Backend) settleMany(ctx context.Context, ss []settling, guard ...string) ([]inventory.State, []error, error) {
	keys, args := []string{b.due}, []any{len(ss), b.retention.Milliseconds()}
	for _, s := range ss {
		r, expect := s.r, ""
		if !s.a.expires.IsZero() {
			expect = strconv.FormatInt(s.a.expires.UnixMilli(), 10)
		}
		keys = append(keys, b.resKey(r.ID))
		args = append(args, len(r.Lines), r.ID, inventory.EncodeLines(r.Lines), r.BuyerID, s.now.UnixMilli(),
			string(s.a.to), string(s.a.need), string(s.a.fallback), r.CreatedAt.UnixMilli(), r.ExpiresAt.UnixMilli(), expect)
		keys, args = b.lineKeys(r, keys, args)
	}
	script := b.s.settleMany
	if len(guard) == 2 {
		script = b.g.settleMany
		keys = append(keys, guard[0])
		args = append(args, guard[1])
	}
	replies, err := script.Run(ctx, b.c, keys, args...).Slice()
	switch {
	case err != nil:
		return nil, nil, err
	case len(replies) == 1 && toInt(replies[0]) == -9: // the guard's {-9}; a reservation's reply is a string
		return nil, nil, errMarker
	case len(replies) != len(ss):
		return nil, nil, fmt.Errorf("redisinventory: settle: %d replies to %d reservations", len(replies), len(ss))
	}
	states, errs := make([]inventory.State, len(ss)), make([]error, len(ss))
	for i, reply := range replies {
		states[i], errs[i] = settleReply(ss[i], toString(reply))
	}
	return states, errs, nil
}

// settleReply turns settleManyLua's reply for s into the state after it or its error.
func settleReply(s settling, out string) (inventory.State, error) {
	switch out {
	case "missing":
		return "", inventory.NotFound(s.r.ID)
	case "stale":
		return "", errStale
	case "lost":
		return "", errLost
	}
	if was, ok := strings.CutPrefix(out, "was "); ok {
		return inventory.State(was), nil
	}
	if out != string(s.a.to) {
		return "", fmt.Errorf("redisinventory: settle: unexpected reply %q", out)
	}
	return s.a.to, nil
}

// lineKeys appends what every reservation script takes after its own keys and arguments: the
// stock key of each line with its quantity, then, for a buyer, the usage key of each line.
func (b *Backend) lineKeys(r inventory.Reservation, keys []string, args []any) ([]string, []any) {
	for _, l := range r.Lines {
		keys = append(keys, b.stockKey(l.SKU))
		args = append(args, l.Qty)
	}
	if r.BuyerID != "" {
		for _, l := range r.Lines {
			keys = append(keys, b.usageKey(l.SKU))
		}
	}
	return keys, args
}
