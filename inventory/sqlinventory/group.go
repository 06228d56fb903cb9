package sqlinventory

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/inventory"
)

// Group commit of hot SKUs. Reservations of the same SKUs that arrive while an earlier
// one of those SKUs is being committed queue up; when that commit ends, the first of them
// leads the whole queue through one transaction of its own: every reservation keeps its
// own row and its own result, the stock rows are locked once and updated once. A leader
// that finds nobody waiting commits its one reservation at once, so there is no timer and
// no added latency without contention; the window is the previous commit.

// maxBatch caps the reservations one transaction commits.
const maxBatch = 128

// committer holds the queues of the SKU sets with a commit in progress.
type committer struct {
	mu     sync.Mutex
	groups map[string][]*call // key: the SKUs; present while a leader runs
	// batches and calls count the transactions run and the reservations they carried.
	batches, calls atomic.Int64
}

func newCommitter() *committer { return &committer{groups: map[string][]*call{}} }

// call is one Reserve waiting for, or in, a group commit.
type call struct {
	ctx   context.Context
	r     inventory.Reservation
	items string
	out   inventory.Reservation
	err   error
	// replay is set when the reservation's row existed: out (or err) is the replay's answer.
	replay bool
	// batch, on the call that is to lead, holds the calls it commits (itself first).
	batch []*call
	// done receives once: when the result is set, or when the call is to lead.
	done chan struct{}
}

// skuKey names the SKU set of a reservation's (sorted, distinct) lines.
func skuKey(lines []inventory.Line) string {
	if len(lines) == 1 {
		return lines[0].SKU
	}
	var sb strings.Builder
	for _, l := range lines {
		sb.WriteString(l.SKU)
		sb.WriteByte(0)
	}
	return sb.String()
}

// reserveGrouped runs r through the group commit of its SKU set.
func (b *Backend) reserveGrouped(ctx context.Context, r inventory.Reservation) (inventory.Reservation, error) {
	c := &call{ctx: ctx, r: r, items: inventory.EncodeLines(r.Lines), done: make(chan struct{}, 1)}
	key := skuKey(r.Lines)
	m := b.group
	m.mu.Lock()
	if queue, busy := m.groups[key]; busy {
		m.groups[key] = append(queue, c)
		m.mu.Unlock()
		// No select on ctx: the call may be in a transaction already; a batch is abandoned
		// only when all its callers are gone (batchContext), and ends within one commit.
		<-c.done
	} else {
		m.groups[key] = nil
		m.mu.Unlock()
		c.batch = []*call{c}
	}
	if c.batch != nil {
		b.lead(key, c.batch)
	}
	if c.err != nil {
		return inventory.Reservation{}, c.err
	}
	return c.out, nil
}

// lead commits batch, hands the lead to the first call that queued meanwhile (with the
// queue as its batch), then wakes the batch's other callers.
func (b *Backend) lead(key string, batch []*call) {
	b.commitBatch(batch)
	m := b.group
	m.mu.Lock()
	queue := m.groups[key]
	var next []*call
	if len(queue) == 0 {
		delete(m.groups, key)
	} else {
		next, queue = takeBatch(queue)
		m.groups[key] = queue
		next[0].batch = next
	}
	m.mu.Unlock()
	if next != nil {
		next[0].done <- struct{}{}
	}
	for _, c := range batch[1:] {
		c.done <- struct{}{}
	}
}

// takeBatch splits the next batch off queue: at most maxBatch calls, no two with one ID
// (a second call with an ID waits for the next batch, where it is a replay).
func takeBatch(queue []*call) (batch, rest []*call) {
	ids := make(map[string]bool, min(len(queue), maxBatch))
	for _, c := range queue {
		if len(batch) < maxBatch && !ids[c.r.ID] {
			ids[c.r.ID] = true
			batch = append(batch, c)
		} else {
			rest = append(rest, c)
		}
	}
	return batch, rest
}

// commitBatch runs the batch's reservations in one transaction of their own (retried on
// lock conflicts like any other) and sets each call's result. Calls whose context ended
// while they queued get its error and are left out.
func (b *Backend) commitBatch(batch []*call) {
	live := make([]*call, 0, len(batch))
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.err = err
		} else {
			live = append(live, c)
		}
	}
	if len(live) == 0 {
		return
	}
	b.group.batches.Add(1)
	b.group.calls.Add(int64(len(live)))
	ctx, cancel := batchContext(live)
	defer cancel()
	err := sqlutil.InTx(ctx, b.db, func(ctx context.Context, tx bun.Tx) error {
		return b.reserveBatch(ctx, tx, live)
	})
	if err != nil {
		for _, c := range live {
			c.err = b.fail(c.ctx, "reserve", err)
		}
	}
}

// batchContext returns a context that carries the first call's values and ends only when
// every call's context has ended: one caller giving up does not fail the others.
func batchContext(calls []*call) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(calls[0].ctx))
	var left atomic.Int64
	left.Store(int64(len(calls)))
	stops := make([]func() bool, len(calls))
	for i, c := range calls {
		stops[i] = context.AfterFunc(c.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// usageKey names a buyer's usage row.
type usageKey struct{ sku, buyer string }

// reserveBatch reserves calls (distinct IDs, one SKU set) in tx, in the lock order of
// Reserve: reservation rows, usage rows by (SKU, buyer), stock rows by SKU. The checks
// run in Go, call after call, on the counts read under the locks, so each call gets the
// answer it would have had alone in that order; the rows of the calls that fail are taken
// out again before the commit.
func (b *Backend) reserveBatch(ctx context.Context, tx bun.Tx, calls []*call) error {
	for _, c := range calls {
		c.out, c.err, c.replay = inventory.Reservation{}, nil, false
	}
	if err := b.insertBatch(ctx, tx, calls); err != nil {
		return err
	}
	fresh := make([]*call, 0, len(calls))
	for _, c := range calls {
		if !c.replay {
			fresh = append(fresh, c)
		}
	}
	if len(fresh) == 0 {
		return nil
	}

	// Usage rows: count every fresh call's units, then read the counts before the batch.
	usage := map[usageKey]int64{}
	for _, c := range fresh {
		if c.r.BuyerID != "" {
			for _, l := range c.r.Lines {
				usage[usageKey{l.SKU, c.r.BuyerID}] += l.Qty
			}
		}
	}
	pairs := sortedPairs(usage)
	if len(pairs) > 0 {
		if err := b.addUsage(ctx, tx, pairs, usage, 1); err != nil {
			return err
		}
		if err := b.usageBefore(ctx, tx, pairs, usage); err != nil {
			return err
		}
	}

	// Stock rows, locked once, checked call after call.
	skus := make([]string, len(fresh[0].r.Lines))
	for i, l := range fresh[0].r.Lines {
		skus[i] = l.SKU
	}
	type stock struct{ avail, limit, taken int64 }
	stocks := make(map[string]*stock, len(skus))
	rows, err := tx.QueryContext(ctx, `SELECT sku, available, buyer_limit FROM inventory_stock WHERE sku IN (?) ORDER BY sku`+b.forUpdate, bun.List(skus))
	if err != nil {
		return err
	}
	for rows.Next() {
		var sku string
		s := &stock{}
		if err := rows.Scan(&sku, &s.avail, &s.limit); err != nil {
			rows.Close()
			return err
		}
		stocks[sku] = s
	}
	if err := rows.Close(); err != nil {
		return err
	}
	refused := map[usageKey]int64{}
	var refusedIDs []string
	for _, c := range fresh {
		c.err = admit(c.r, func(l inventory.Line) (avail, limit, used int64, ok bool) {
			s := stocks[l.SKU]
			if s == nil {
				return 0, 0, 0, false
			}
			return s.avail, s.limit, usage[usageKey{l.SKU, c.r.BuyerID}], true
		})
		if c.err != nil {
			refusedIDs = append(refusedIDs, c.r.ID)
			if c.r.BuyerID != "" {
				for _, l := range c.r.Lines {
					refused[usageKey{l.SKU, c.r.BuyerID}] += l.Qty
				}
			}
			continue
		}
		c.out = c.r
		for _, l := range c.r.Lines {
			s := stocks[l.SKU]
			s.avail -= l.Qty
			s.taken += l.Qty
			if c.r.BuyerID != "" {
				usage[usageKey{l.SKU, c.r.BuyerID}] += l.Qty
			}
		}
	}
	for _, sku := range skus {
		if s := stocks[sku]; s != nil && s.taken > 0 {
			if _, err := tx.ExecContext(ctx, `UPDATE inventory_stock SET available = available - ?, reserved = reserved + ? WHERE sku = ?`,
				s.taken, s.taken, sku); err != nil {
				return err
			}
		}
	}
	if len(refusedIDs) > 0 {
		if _, err := tx.ExecContext(ctx, `DELETE FROM inventory_reservations WHERE id IN (?)`, bun.List(refusedIDs)); err != nil {
			return err
		}
		if err := b.addUsage(ctx, tx, sortedPairs(refused), refused, -1); err != nil {
			return err
		}
	}
	return nil
}

// admit checks r's lines, in order, against the counts stock gives (ok false: unknown SKU)
// and returns the error Reserve alone would have returned, or nil.
func admit(r inventory.Reservation, stock func(inventory.Line) (avail, limit, used int64, ok bool)) error {
	for _, l := range r.Lines {
		avail, limit, used, ok := stock(l)
		switch {
		case !ok:
			return &inventory.UnknownSKUError{SKU: l.SKU}
		case avail < l.Qty:
			return &inventory.InsufficientStockError{SKU: l.SKU, Requested: l.Qty, Available: avail}
		case limit > 0 && r.BuyerID == "":
			return &inventory.BuyerLimitError{SKU: l.SKU, Limit: limit, Requested: l.Qty}
		case limit > 0 && used+l.Qty > limit:
			return &inventory.BuyerLimitError{SKU: l.SKU, BuyerID: r.BuyerID, Limit: limit, Used: used, Requested: l.Qty}
		}
	}
	return nil
}

// insertBatch inserts the calls' reservation rows, in one statement when none exists yet;
// otherwise one by one, answering each call whose row exists as a replay.
func (b *Backend) insertBatch(ctx context.Context, tx bun.Tx, calls []*call) error {
	q := strings.Builder{}
	q.WriteString(`INSERT INTO inventory_reservations (id, state, items, buyer_id, created_at, expires_at) VALUES `)
	args := make([]any, 0, 6*len(calls))
	for i, c := range calls {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?, ?, ?, ?)")
		args = append(args, c.r.ID, string(inventory.StateReserved), c.items, c.r.BuyerID, millis(c.r.CreatedAt), millis(c.r.ExpiresAt))
	}
	_, err := tx.ExecContext(ctx, q.String(), args...)
	if err == nil || !sqlutil.IsDuplicateKey(err) {
		return err
	}
	for _, c := range calls {
		c.replay, c.out, c.err = b.insert(ctx, tx, c.r, c.items)
		if c.err != nil && !isDomain(c.err) {
			return c.err
		}
	}
	return nil
}

// insert inserts r's reservation row. When one exists it reports a replay, with the
// stored reservation or a *ConflictError when its lines or buyer differ. The stored row
// is read under a shared lock, which the failed INSERT already holds: concurrent replays
// of one ID wait for its first transaction instead of deadlocking over an upgrade.
func (b *Backend) insert(ctx context.Context, tx bun.Tx, r inventory.Reservation, items string) (replay bool, prev inventory.Reservation, err error) {
	_, err = tx.ExecContext(ctx, `INSERT INTO inventory_reservations
 (id, state, items, buyer_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`,
		r.ID, string(inventory.StateReserved), items, r.BuyerID, millis(r.CreatedAt), millis(r.ExpiresAt))
	if err == nil || !sqlutil.IsDuplicateKey(err) {
		return false, inventory.Reservation{}, err
	}
	prev, err = b.get(ctx, tx, r.ID, b.shareLock)
	if err != nil {
		return true, inventory.Reservation{}, err
	}
	if inventory.EncodeLines(prev.Lines) != items || prev.BuyerID != r.BuyerID {
		return true, inventory.Reservation{}, &inventory.ConflictError{Kind: "reservation", ID: r.ID}
	}
	return true, prev, nil
}

// isDomain reports whether err is one of the backend's domain errors.
func isDomain(err error) bool {
	for _, d := range domainErrors {
		if err != nil && errors.Is(err, d) {
			return true
		}
	}
	return false
}

// sortedPairs returns the keys of m in lock order: by SKU, then buyer.
func sortedPairs(m map[usageKey]int64) []usageKey {
	return slices.SortedFunc(maps.Keys(m), func(a, b usageKey) int {
		return cmp.Or(cmp.Compare(a.sku, b.sku), cmp.Compare(a.buyer, b.buyer))
	})
}

// addUsage adds sign × qty[pair] to each pair's usage row, creating the rows, in one
// statement (none for no pairs).
func (b *Backend) addUsage(ctx context.Context, tx bun.Tx, pairs []usageKey, qty map[usageKey]int64, sign int64) error {
	if len(pairs) == 0 {
		return nil
	}
	var q strings.Builder
	q.WriteString(`INSERT INTO inventory_buyer_usage (sku, buyer_id, qty) VALUES `)
	args := make([]any, 0, 3*len(pairs))
	for i, p := range pairs {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?)")
		args = append(args, p.sku, p.buyer, sign*qty[p])
	}
	q.WriteString(b.addUsageTail)
	_, err := tx.ExecContext(ctx, q.String(), args...)
	return err
}

// usageBefore reads the pairs' usage rows (which the batch has just added to) and turns
// usage, which holds the batch's units per pair, into the counts before the batch.
func (b *Backend) usageBefore(ctx context.Context, tx bun.Tx, pairs []usageKey, usage map[usageKey]int64) error {
	var q strings.Builder
	q.WriteString(`SELECT sku, buyer_id, qty FROM inventory_buyer_usage WHERE (sku, buyer_id) IN (`)
	args := make([]any, 0, 2*len(pairs))
	for i, p := range pairs {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?)")
		args = append(args, p.sku, p.buyer)
	}
	q.WriteString(")")
	rows, err := tx.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var p usageKey
		var n int64
		if err := rows.Scan(&p.sku, &p.buyer, &n); err != nil {
			return err
		}
		usage[p] = n - usage[p]
	}
	return rows.Err()
}
