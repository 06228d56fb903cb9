package redisinventory

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/inventory"
)

// SetStock runs the set-stock script.
func (b *Backend) SetStock(ctx context.Context, s inventory.StockSetting) (inventory.Stock, error) {
	res, err := b.s.setStock.Run(ctx, b.c, []string{b.stockKey(s.SKU), b.skus}, s.SKU, s.OnHand, s.BuyerLimit).Slice()
	if err != nil {
		return inventory.Stock{}, fail(ctx, "set stock", err)
	}
	return setStockReply(s, res)
}

// setStockReply turns the set-stock script's reply into the stock or its error.
func setStockReply(s inventory.StockSetting, res []any) (inventory.Stock, error) {
	switch toInt(res[0]) {
	case -3:
		onHand, avail := toInt(res[1]), toInt(res[2])
		return inventory.Stock{}, &inventory.InsufficientStockError{SKU: s.SKU, Requested: onHand - s.OnHand, Available: avail}
	case -9:
		return inventory.Stock{}, errMarker
	case -10:
		return inventory.Stock{}, fmt.Errorf("%w: the stock or buyer usage key of %s is gone", errLost, s.SKU)
	case -11:
		return inventory.Stock{}, fmt.Errorf("%w: Redis counts %d units of %s sold", errSoldApart, toInt(res[1]), s.SKU)
	}
	return stockFrom(s.SKU, res[1:]), nil
}

// errSoldApart is the guarded set-stock script's refusal ({-11}): Redis's sold count is
// not the journal's committed units (see Durable.SetStock).
var errSoldApart = fmt.Errorf("%w: Redis's sold count is not the journal's committed units", errLost)

// Adjust runs the adjust script, which refuses a delta that would take the on-hand count
// past inventory.MaxOnHand; the adjustment ID is remembered for the retention period.
func (b *Backend) Adjust(ctx context.Context, a inventory.Adjustment, _ time.Time) (inventory.Stock, error) {
	res, err := b.s.adjust.Run(ctx, b.c, []string{b.stockKey(a.SKU), b.adjKey(a.ID)}, b.adjustArgs(a, inventory.MaxOnHand)...).Slice()
	if err != nil {
		return inventory.Stock{}, fail(ctx, "adjust", err)
	}
	return adjustReply(a, res)
}

// adjustArgs are the adjust script's arguments for a: a positive delta may leave at most
// maxOnHand on hand (0: no bound).
func (b *Backend) adjustArgs(a inventory.Adjustment, maxOnHand int64) []any {
	fingerprint := a.SKU + "\n" + strconv.FormatInt(a.Delta, 10) + "\n" + a.Reason
	return []any{a.Delta, fingerprint, b.retention.Milliseconds(), maxOnHand}
}

// adjustReply turns the adjust script's reply into the stock or its error.
func adjustReply(a inventory.Adjustment, res []any) (inventory.Stock, error) {
	switch toInt(res[0]) {
	case 1:
		return stockFrom(a.SKU, res[1:]), nil
	case -1:
		return inventory.Stock{}, inventory.NewConflictError("adjustment", a.ID)
	case -2:
		return inventory.Stock{}, &inventory.UnknownSKUError{SKU: a.SKU}
	case -3:
		return inventory.Stock{}, &inventory.InsufficientStockError{SKU: a.SKU, Requested: -a.Delta, Available: toInt(res[1])}
	case -4:
		return inventory.Stock{}, inventory.OnHandPastMax(a.SKU, toInt(res[1]), a.Delta)
	case -9:
		return inventory.Stock{}, errMarker
	}
	return inventory.Stock{}, fmt.Errorf("redisinventory: adjust: unexpected reply %v", res)
}

// Stocks reads the SKUs with one pipelined HMGET each: one round trip.
func (b *Backend) Stocks(ctx context.Context, skus []string) (map[string]inventory.Stock, error) {
	cmds := make([]*redis.SliceCmd, len(skus))
	_, err := b.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sku := range skus {
			cmds[i] = p.HMGet(ctx, b.stockKey(sku), stockFields...)
		}
		return nil
	})
	if err != nil {
		return nil, fail(ctx, "stocks", err)
	}
	m := make(map[string]inventory.Stock, len(skus))
	for i, cmd := range cmds {
		if v := cmd.Val(); v[0] != nil {
			m[skus[i]] = stockFrom(skus[i], v)
		}
	}
	return m, nil
}
