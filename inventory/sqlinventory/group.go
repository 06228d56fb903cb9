package sqlinventory

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/internal/groupcommit"
)

// skuKey names the SKU set of a reservation's (sorted, distinct) lines: the reservations
// of one SKU set share transactions (see groupcommit), each taking the same stock rows in
// the same order.
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

// usageKey names a buyer's usage row.
type usageKey struct{ sku, buyer string }

// reserveBatch reserves calls (distinct IDs, one SKU set) in tx, in the lock order of
// Reserve: reservation rows, usage rows by (SKU, buyer), stock rows by SKU. The checks
// run in Go, call after call, on the counts read under the locks, so each call gets the
// answer it would have had alone in that order; the rows of the calls that fail are taken
// out again before the commit.
func (b *Backend) reserveBatch(ctx context.Context, tx bun.Tx, calls []*groupcommit.Call) error {
	fresh, err := groupcommit.InsertRows(ctx, tx, "inventory_reservations", calls, b.shareLock)
	if err != nil || len(fresh) == 0 {
		return err
	}

	// Usage rows: count every fresh call's units, then read the counts before the batch.
	usage := map[usageKey]int64{}
	for _, c := range fresh {
		if c.R.BuyerID != "" {
			for _, l := range c.R.Lines {
				usage[usageKey{l.SKU, c.R.BuyerID}] += l.Qty
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
	skus := make([]string, len(fresh[0].R.Lines))
	for i, l := range fresh[0].R.Lines {
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
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return err
	}
	refusedUsage := map[usageKey]int64{}
	var refused []*groupcommit.Call
	for _, c := range fresh {
		c.Err = admit(c.R, func(l inventory.Line) (avail, limit, used int64, ok bool) {
			s := stocks[l.SKU]
			if s == nil {
				return 0, 0, 0, false
			}
			return s.avail, s.limit, usage[usageKey{l.SKU, c.R.BuyerID}], true
		})
		if c.Err != nil {
			refused = append(refused, c)
			if c.R.BuyerID != "" {
				for _, l := range c.R.Lines {
					refusedUsage[usageKey{l.SKU, c.R.BuyerID}] += l.Qty
				}
			}
			continue
		}
		c.Out = c.R
		for _, l := range c.R.Lines {
			s := stocks[l.SKU]
			s.avail -= l.Qty
			s.taken += l.Qty
			if c.R.BuyerID != "" {
				usage[usageKey{l.SKU, c.R.BuyerID}] += l.Qty
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
	if err := groupcommit.Refuse(ctx, tx, "inventory_reservations", refused); err != nil {
		return err
	}
	return b.addUsage(ctx, tx, sortedPairs(refusedUsage), refusedUsage, -1)
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
