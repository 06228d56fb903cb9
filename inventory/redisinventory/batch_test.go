package redisinventory_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/inventory"
	"github.com/commercekit/commercekit/inventory/redisinventory"
)

// TestBatchIsSequential: reservations combined into one script call (and, with Durable, one
// journal transaction) get the answers and leave the state they would one after another:
// the script reads each SKU's stock and buyer usage once per batch and writes them at the
// end, so a batch whose later reservations did not see the earlier ones' units would
// oversell or refuse wrongly here.
func TestBatchIsSequential(t *testing.T) {
	for _, s := range []struct {
		name string
		new  func(t *testing.T) (inventory.Backend, *redis.Client)
	}{
		{"plain", func(t *testing.T) (inventory.Backend, *redis.Client) {
			rdb := testenv.Redis(t)
			return redisinventory.New(rdb), rdb
		}},
		{"durable", func(t *testing.T) (inventory.Backend, *redis.Client) {
			d, rdb, _ := newDurable(t)
			return d, rdb
		}},
	} {
		t.Run(s.name, func(t *testing.T) {
			batched := runBatchScenario(t, s.new, true)
			alone := runBatchScenario(t, s.new, false)
			assert.Equal(t, alone, batched, "one batch and one reservation at a time differ")

			want := []string{
				"a: reserved",
				"b: " + (&inventory.InsufficientStockError{SKU: "hot", Requested: 3, Available: 2}).Error(),
				"c: reserved",
				"d: " + (&inventory.BuyerLimitError{SKU: "drop", BuyerID: "b1", Limit: 2, Used: 2, Requested: 1}).Error(),
				"a: reserved",     // a replay of a reservation of the same batch
				"early: reserved", // a replay of one reserved before
				"e: " + (&inventory.InsufficientStockError{SKU: "hot", Requested: 3, Available: 2}).Error(),
				"a: conflict",
				"f: reserved",
				"g: " + (&inventory.UnknownSKUError{SKU: "nope"}).Error(),
				"h: " + (&inventory.BuyerLimitError{SKU: "drop", Limit: 2, Requested: 1}).Error(),
				"i: reserved",
				"j: reserved",
				"j: reserved",
				"k: reserved",
				"l: " + (&inventory.BuyerLimitError{SKU: "drop", BuyerID: "b3", Limit: 2, Used: 2, Requested: 1}).Error(),
			}
			assert.Equal(t, want, batched.answers)
			assert.Equal(t, [2][3]int64{{10, 5, 0}, {5, 0, 0}}, batched.stock, "drop, hot: on hand, available, sold")
			assert.Equal(t, [2]map[string]string{{"b1": "2", "b2": "1", "b3": "2"}, {"b1": "1"}}, batched.usage, "buyer usage of drop, hot")
			assert.Equal(t, []string{"a", "c", "early", "f", "i", "j", "k"}, batched.due, "the due index holds the reservations made")
			assert.Equal(t, map[string]string{
				"early": "reserved drop=1,hot=1 b1", "a": "reserved hot=2 ", "c": "reserved drop=1 b1",
				"f": "reserved hot=2 ", "i": "reserved drop=1 b2",
				"j": "reserved drop=1 b3", "k": "reserved drop=1 b3",
			}, batched.records)
		})
	}
}

// batchScenario is what runBatchScenario saw: each answer, and the state left.
type batchScenario struct {
	answers []string
	stock   [2][3]int64          // drop, hot: on hand, available, sold
	usage   [2]map[string]string // drop, hot: units per buyer
	due     []string
	records map[string]string // id: state, lines, buyer of every reservation held
}

// runBatchScenario stocks "drop" (10 units, 2 per buyer) and "hot" (5 units), reserves
// "early" (one of each, buyer b1), then runs two batches of reservations that depend on
// each other's effects, each in one call (batched) or one reservation at a time.
func runBatchScenario(t *testing.T, newBackend func(t *testing.T) (inventory.Backend, *redis.Client), batched bool) batchScenario {
	ctx := context.Background()
	be, rdb := newBackend(t)
	inv := inventory.New(be)
	setStock(t, inv, "drop", 10, 2)
	setStock(t, inv, "hot", 5, 0)
	now := time.Now().UTC().Truncate(time.Millisecond)
	res := func(id, buyer string, lines ...inventory.Line) inventory.Reservation {
		return inventory.Reservation{ID: id, BuyerID: buyer, Lines: lines, State: inventory.StateReserved,
			CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	drop, hot := inventory.Line{SKU: "drop", Qty: 1}, func(q int64) inventory.Line { return inventory.Line{SKU: "hot", Qty: q} }
	_, errs := redisinventory.ReserveBatch(ctx, be, res("early", "b1", drop, hot(1)))
	require.NoError(t, errs[0])

	batches := [][]inventory.Reservation{{
		res("a", "", hot(2)),                              // fits: 2 of hot left
		res("b", "", hot(3)),                              // more than a left
		res("c", "b1", drop),                              // b1's second unit of drop: at its limit
		res("d", "b1", drop),                              // over b1's limit, counting c
		res("a", "", hot(2)),                              // replay of a
		res("early", "b1", drop, hot(1)),                  // replay of early
		res("e", "b2", drop, hot(3)),                      // refused on its second line: takes nothing
		res("a", "", hot(1)),                              // a with other lines
		res("f", "", hot(2)),                              // the last 2 of hot
		res("g", "", inventory.Line{SKU: "nope", Qty: 1}), // unknown SKU
		res("h", "", drop),                                // drop has a buyer limit: no buyer, no unit
		res("i", "b2", drop),                              // e took nothing of b2's limit
	}, { // no record exists before this batch
		res("j", "b3", drop),
		res("j", "b3", drop), // replay of j, made in this batch
		res("k", "b3", drop), // b3's second unit
		res("l", "b3", drop), // over b3's limit
	}}
	var rs, got []inventory.Reservation
	errs = nil
	for _, batch := range batches {
		rs = append(rs, batch...)
		if batched {
			out, e := redisinventory.ReserveBatch(ctx, be, batch...)
			got, errs = append(got, out...), append(errs, e...)
			continue
		}
		for _, r := range batch {
			out, e := redisinventory.ReserveBatch(ctx, be, r)
			got, errs = append(got, out[0]), append(errs, e[0])
		}
	}
	var s batchScenario
	for i, r := range rs {
		switch {
		case errors.Is(errs[i], inventory.ErrIdempotencyConflict):
			s.answers = append(s.answers, r.ID+": conflict")
		case errs[i] != nil:
			s.answers = append(s.answers, r.ID+": "+errs[i].Error())
		default:
			require.Equal(t, r.ID, got[i].ID)
			require.Equal(t, r.Lines, got[i].Lines, r.ID)
			s.answers = append(s.answers, fmt.Sprintf("%s: %s", r.ID, got[i].State))
		}
	}
	for i, sku := range []string{"drop", "hot"} {
		st, err := inv.Stock(ctx, sku)
		require.NoError(t, err)
		s.stock[i] = [3]int64{st.OnHand, st.Available, st.Sold}
		s.usage[i], err = rdb.HGetAll(ctx, "{inventory}:buyers:"+sku).Result()
		require.NoError(t, err)
	}
	var err error
	s.due, err = rdb.ZRange(ctx, "{inventory}:due", 0, -1).Result()
	require.NoError(t, err)
	s.records = map[string]string{}
	for _, id := range []string{"early", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"} {
		r, err := be.Get(ctx, id)
		if errors.Is(err, inventory.ErrReservationNotFound) {
			continue
		}
		require.NoError(t, err)
		require.Equal(t, now.Add(time.Hour), r.ExpiresAt, id)
		s.records[id] = fmt.Sprintf("%s %s %s", r.State, inventory.EncodeLines(r.Lines), r.BuyerID)
	}
	return s
}

// TestDurableBatchAdoptsEarlierAttempts: in a batch of the journaled backend, a live Redis
// record of a reservation the journal does not hold (the Redis half of an attempt whose
// SQL transaction rolled back) is adopted without taking its units again, a dead one is
// reserved anew over, and the others of the batch are reserved as usual.
func TestDurableBatchAdoptsEarlierAttempts(t *testing.T) {
	ctx := context.Background()
	d, rdb, _ := newDurable(t)
	inv := inventory.New(d)
	setStock(t, inv, "hot", 10, 0)
	now := time.Now().UTC().Truncate(time.Millisecond)
	res := func(id string, qty int64) inventory.Reservation {
		return inventory.Reservation{ID: id, Lines: line("hot", qty), State: inventory.StateReserved, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	// The Redis halves alone, as the rolled-back attempts left them.
	plain := redisinventory.New(rdb)
	_, errs := redisinventory.ReserveBatch(ctx, plain, res("live", 2), res("dead", 3))
	require.NoError(t, errors.Join(errs...))
	_, err := plain.Release(ctx, "dead", now)
	require.NoError(t, err)
	wantStock(t, inv, "hot", 10, 8, 0)

	_, errs = redisinventory.ReserveBatch(ctx, d, res("new", 1), res("live", 2), res("dead", 3))
	require.NoError(t, errors.Join(errs...))
	wantStock(t, inv, "hot", 10, 4, 0) // live's 2 units once, dead's 3 anew, new's 1
	for _, id := range []string{"new", "live", "dead"} {
		r, err := d.Get(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, inventory.StateReserved, r.State, id)
		assert.Equal(t, now.Add(time.Hour), r.ExpiresAt, id)
	}
	due, err := rdb.ZRange(ctx, "{inventory}:due", 0, -1).Result()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"new", "live", "dead"}, due)
}
