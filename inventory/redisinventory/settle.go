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
)

// errLost says a script found the generation marker missing or different, or a stock key
// gone: Redis lost data, or a rebuild is under way.
var errLost = errors.New("redisinventory: Redis lost its data or is being rebuilt")

// errStale says the reservation record changed under the caller (another reservation's
// record, or one renewed since it was read).
var errStale = errors.New("redisinventory: reservation record changed")

// settleArgs say where settleLua moves a reservation.
type settleArgs struct {
	to inventory.State
	// need is the only state it may move from ("" any); fallback the state to assume when
	// the record is gone ("": ErrReservationNotFound).
	need, fallback inventory.State
	// expires, when not zero, is the deadline the record must still have.
	expires time.Time
}

// settle runs settleLua (guarded with the marker and generation when guard holds them)
// for r and returns the state the reservation is in after it.
func (b *Backend) settle(ctx context.Context, c redis.Scripter, r inventory.Reservation, a settleArgs, now time.Time, guard ...string) (inventory.State, error) {
	n := len(r.Lines)
	keys := make([]string, 2, 3+2*n)
	keys[0], keys[1] = b.resKey(r.ID), b.due
	expect := ""
	if !a.expires.IsZero() {
		expect = strconv.FormatInt(a.expires.UnixMilli(), 10)
	}
	args := []any{r.ID, inventory.EncodeLines(r.Lines), r.BuyerID, now.UnixMilli(), b.retention.Milliseconds(),
		string(a.to), string(a.need), string(a.fallback), r.CreatedAt.UnixMilli(), r.ExpiresAt.UnixMilli(), expect}
	for _, l := range r.Lines {
		keys = append(keys, b.stockKey(l.SKU))
		args = append(args, l.Qty)
	}
	if r.BuyerID != "" {
		for _, l := range r.Lines {
			keys = append(keys, b.usageKey(l.SKU))
		}
	}
	script := b.s.settle
	if len(guard) == 2 {
		script = b.g.settle
		keys = append(keys, guard[0])
		args = append(args, guard[1])
	}
	reply, err := script.Run(ctx, c, keys, args...).Result()
	if err != nil {
		return "", err
	}
	out, ok := reply.(string)
	if !ok {
		return "", errLost // the guard's {-9}
	}
	switch out {
	case "missing":
		return "", inventory.NotFound(r.ID)
	case "stale":
		return "", errStale
	case "lost":
		return "", errLost
	}
	if was, ok := strings.CutPrefix(out, "was "); ok {
		return inventory.State(was), nil
	}
	if out != string(a.to) {
		return "", fmt.Errorf("redisinventory: settle: unexpected reply %q", out)
	}
	return a.to, nil
}
