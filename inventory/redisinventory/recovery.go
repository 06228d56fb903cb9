package redisinventory

import (
	"context"
	"strconv"

	"github.com/commercekit/commercekit/inventory"
)

// warmUpBatch is how many SKUs one warm-up script call loads.
const warmUpBatch = 500

// WarmUp loads stock into Redis from the system of record, typically the Stocks of a SQL
// inventory: each SKU Redis does not have is created with the given Available count (as
// its on-hand count, nothing reserved or sold) and BuyerLimit. SKUs Redis already has are
// left alone, so WarmUp is safe to run at every start and after Redis restarted empty;
// use SetStock to change a SKU Redis has. It returns how many SKUs it created. A stock out
// of range (Available negative or past twice inventory.MaxOnHand, which returns may take
// it past; BuyerLimit negative or past MaxOnHand) fails the whole call, before anything is
// loaded, with a *inventory.ValidationError matching inventory.ErrInvalidQuantity.
func (b *Backend) WarmUp(ctx context.Context, stocks []inventory.Stock) (int, error) {
	for _, st := range stocks {
		if err := inventory.CheckSKU(st.SKU); err != nil {
			return 0, err
		}
		if st.Available < 0 || st.Available > 2*inventory.MaxOnHand || st.BuyerLimit < 0 || st.BuyerLimit > inventory.MaxOnHand {
			return 0, &inventory.ValidationError{Field: "stock of " + st.SKU,
				Reason: "available must be between 0 and twice MaxOnHand, buyer limit between 0 and MaxOnHand", Err: inventory.ErrInvalidQuantity}
		}
	}
	loaded := 0
	for start := 0; start < len(stocks); start += warmUpBatch {
		batch := stocks[start:min(start+warmUpBatch, len(stocks))]
		keys := make([]string, 1, 1+len(batch))
		keys[0] = b.skus
		args := make([]any, 0, 3*len(batch))
		for _, st := range batch {
			keys = append(keys, b.stockKey(st.SKU))
			args = append(args, st.SKU, st.Available, st.BuyerLimit)
		}
		n, err := b.s.warmUp.Run(ctx, b.c, keys, args...).Int()
		loaded += n
		if err != nil {
			return loaded, fail(ctx, "warm up", err)
		}
	}
	return loaded, nil
}

// SoldFunc records that the units of sku sold through Redis went from `from` to `to`
// (cumulative counts; to > from), for instance as a SQL inventory Adjust with ID
// "redis-sold:<sku>:<to>" and delta from-to. It must be idempotent on (sku, to): after a
// failure WriteBack hands it the same range again (ranges are fixed once handed out, so
// they never overlap).
type SoldFunc func(ctx context.Context, sku string, from, to int64) error

// WriteBack hands each SKU's sold units not yet written back to fn, one fixed range per
// SKU, and after fn succeeds moves the SKU's written-back watermark to the range's end. It
// returns how many units it wrote back. Run it periodically (and after a sale) to carry
// Redis' sales into the system of record; several at once are safe. A SKU whose fn fails
// stays pending for the next run, and the first such error is returned.
func (b *Backend) WriteBack(ctx context.Context, fn SoldFunc) (int64, error) {
	var written int64
	var firstErr error
	var cursor uint64
	for {
		skus, next, err := b.c.SScan(ctx, b.skus, cursor, "", warmUpBatch).Result()
		if err != nil {
			return written, fail(ctx, "write back", err)
		}
		for _, sku := range skus {
			n, err := b.writeBack(ctx, sku, fn)
			written += n
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if ctx.Err() != nil {
				return written, ctx.Err()
			}
		}
		if cursor = next; cursor == 0 {
			return written, firstErr
		}
	}
}

// writeBack claims sku's pending range, hands it to fn and notes it written back.
func (b *Backend) writeBack(ctx context.Context, sku string, fn SoldFunc) (int64, error) {
	key := b.stockKey(sku)
	r, err := b.s.claim.Run(ctx, b.c, []string{key}).Slice()
	if err != nil || len(r) < 2 {
		return 0, failIf(ctx, "write back", err)
	}
	from, to := toInt(r[0]), toInt(r[1])
	if err := fn(ctx, sku, from, to); err != nil {
		return 0, err
	}
	moved, err := b.s.synced.Run(ctx, b.c, []string{key}, strconv.FormatInt(to, 10)).Int()
	if err != nil || moved == 0 {
		return 0, failIf(ctx, "write back", err)
	}
	return to - from, nil
}
