package collector_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/outbox"
)

func TestSalesAndRefundsPerDay(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		require.NoError(t, e.consumer.Deliver(ctx, events(
			sale{order: "o1", at: kst("2026-03-04", 10), lines: map[string]int64{"a": 2, "b": 1}},
			sale{order: "o2", at: kst("2026-03-04", 11), lines: map[string]int64{"a": 1}},
			sale{order: "o1", at: kst("2026-03-04", 12), lines: map[string]int64{"a": 2, "b": 1}, refund: true},
			// 23:30 UTC on the 4th is 08:30 on the 5th in Seoul.
			sale{order: "o3", at: time.Date(2026, 3, 4, 23, 30, 0, 0, time.UTC), lines: map[string]int64{"b": 5}},
		)))
		assert.Equal(t, collector.Metrics{Orders: 2, Units: 3, Revenue: 3000, Cancellations: 1, UnitsRefunded: 2,
			RevenueRefunded: 2000, NetUnits: 1, NetRevenue: 1000}, e.metricsOf(t, collector.Daily, "a", "2026-03-04"))
		assert.Equal(t, collector.Metrics{Orders: 1, Units: 1, Revenue: 1000, Cancellations: 1, UnitsRefunded: 1,
			RevenueRefunded: 1000}, e.metricsOf(t, collector.Daily, "b", "2026-03-04"))
		assert.Equal(t, collector.Metrics{Orders: 1, Units: 5, Revenue: 5000, NetUnits: 5, NetRevenue: 5000},
			e.metricsOf(t, collector.Daily, "b", "2026-03-05"))
	})
}

func TestDiscountSharedAmongLines(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		ev := sale{order: "o1", at: kst("2026-03-04", 10), lines: map[string]int64{"a": 1, "b": 1, "c": 1}}.event()
		ev.Payload = []byte(`{"schemaVersion":1,"orderId":"o1","userId":"u","status":"PAID","lines":[` +
			`{"productId":"a","qty":1,"unitPrice":1000,"amount":1000},{"productId":"b","qty":1,"unitPrice":1000,"amount":1000},` +
			`{"productId":"c","qty":1,"unitPrice":1000,"amount":1000}],"subtotal":3000,"discount":1000,"points":500,` +
			`"amountDue":1500,"currency":"KRW","at":"2026-03-04T01:00:00Z"}`)
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{ev}))
		var sum int64
		for p, want := range map[string]int64{"a": 666, "b": 666, "c": 668} {
			got := e.metricsOf(t, collector.Daily, p, "2026-03-04").Revenue
			assert.Equal(t, want, got, p)
			sum += got
		}
		assert.Equal(t, int64(2000), sum, "the lines' revenue adds up to what was paid")
	})
}

func TestDuplicatesChangeNothing(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		batch := append(events(
			sale{order: "o1", at: kst("2026-03-04", 10), lines: map[string]int64{"a": 2}},
			sale{order: "o2", at: kst("2026-03-05", 10), lines: map[string]int64{"b": 1}},
			sale{order: "o1", at: kst("2026-03-06", 10), lines: map[string]int64{"a": 2}, refund: true},
		), created("o1", kst("2026-03-04", 9)))
		require.NoError(t, e.consumer.Deliver(ctx, append(batch, batch[0]))) // a repeat within the batch
		e.rollup(t)
		before := e.snapshot(t)
		require.NotEmpty(t, before)
		require.NoError(t, e.consumer.Deliver(ctx, batch))      // redelivered whole
		require.NoError(t, e.consumer.Deliver(ctx, batch[1:2])) // and one alone
		e.rollup(t)
		assert.Equal(t, before, e.snapshot(t))
		gaps, err := e.collector.Gaps(ctx, 10)
		require.NoError(t, err)
		assert.Empty(t, gaps, "each stream's events were applied exactly once")
	})
}

// TestRollups checks that a week's and a month's rows are the sums of their days', that a
// late event for a closed day updates the day and both rollups, and that recomputing
// changes nothing. The ISO week of 2026-03-30 (Monday) runs into April.
func TestRollups(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		days := []string{"2026-03-29", "2026-03-30", "2026-03-31", "2026-04-01", "2026-04-05", "2026-04-06"}
		var sales []sale
		for i, d := range days {
			sales = append(sales, sale{order: "o" + d, at: kst(d, 12), lines: map[string]int64{"a": int64(i + 1), "b": 1}})
		}
		require.NoError(t, e.consumer.Deliver(ctx, events(sales...)))
		e.rollup(t)

		sum := func(p collector.Period, start string, from, to string) {
			t.Helper()
			for _, product := range []string{"a", "b"} {
				var want collector.Metrics
				daily, err := e.collector.ProductMetrics(ctx, product, collector.Daily, date(from), date(to))
				require.NoError(t, err)
				for _, d := range daily {
					want.Orders += d.Orders
					want.Units += d.Units
					want.Revenue += d.Revenue
					want.NetUnits += d.NetUnits
					want.NetRevenue += d.NetRevenue
				}
				assert.Equal(t, want, e.metricsOf(t, p, product, start), "%s %s of %s", p, start, product)
			}
		}
		sum(collector.Weekly, "2026-03-30", "2026-03-30", "2026-04-05")
		sum(collector.Weekly, "2026-03-23", "2026-03-23", "2026-03-29")
		sum(collector.Monthly, "2026-03-01", "2026-03-01", "2026-03-31")
		sum(collector.Monthly, "2026-04-01", "2026-04-01", "2026-04-30")
		assert.Equal(t, int64(2+3+4+5), e.metricsOf(t, collector.Weekly, "a", "2026-04-02").Units)

		// A late event for the 31st, after its week and month were rolled up.
		require.NoError(t, e.consumer.Deliver(ctx, events(sale{order: "late", at: kst("2026-03-31", 23), lines: map[string]int64{"a": 10}})))
		assert.Equal(t, int64(3+10), e.metricsOf(t, collector.Daily, "a", "2026-03-31").Units)
		e.rollup(t)
		assert.Equal(t, int64(2+3+4+5+10), e.metricsOf(t, collector.Weekly, "a", "2026-03-30").Units)
		assert.Equal(t, int64(1+2+3+10), e.metricsOf(t, collector.Monthly, "a", "2026-03-01").Units)
		sum(collector.Weekly, "2026-03-30", "2026-03-30", "2026-04-05")
		sum(collector.Monthly, "2026-03-01", "2026-03-01", "2026-03-31")

		before := e.snapshot(t)
		for _, p := range []collector.Period{collector.Weekly, collector.Monthly} {
			for _, d := range days {
				require.NoError(t, e.collector.Recompute(ctx, p, date(d)))
			}
		}
		assert.Equal(t, before, e.snapshot(t), "recomputing is idempotent")
		require.ErrorIs(t, e.collector.Recompute(ctx, collector.Daily, date("2026-03-31")), collector.ErrInvalidArgument)
	})
}

func TestRanking(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		day := "2026-03-04"
		require.NoError(t, e.consumer.Deliver(ctx, events(
			sale{order: "o1", at: kst(day, 10), lines: map[string]int64{"c": 3, "b": 3, "d": 1}},
			sale{order: "o2", at: kst(day, 11), lines: map[string]int64{"a": 3, "e": 9}},
			sale{order: "o2", at: kst(day, 12), lines: map[string]int64{"a": 3, "e": 9}, refund: true},
			sale{order: "o3", at: kst(day, 13), lines: map[string]int64{"a": 3, "z": 5}},
			sale{order: "o4", at: kst("2026-03-05", 13), lines: map[string]int64{"d": 4}},
		)))
		e.rollup(t)
		ranking := func(p collector.Period, d string, limit int) []string {
			got, err := e.collector.Ranking(ctx, p, date(d), limit)
			require.NoError(t, err)
			var out []string
			for i, r := range got {
				assert.Equal(t, i+1, r.Rank)
				out = append(out, r.ProductID)
			}
			return out
		}
		// z 5; a, b, c 3 each (ties by product ID); d 1; e 0 net (refunded) is left out.
		assert.Equal(t, []string{"z", "a", "b", "c", "d"}, ranking(collector.Daily, day, 10))
		assert.Equal(t, []string{"z", "a"}, ranking(collector.Daily, day, 2))
		// Over the week d has 5, ahead of z on the product ID.
		assert.Equal(t, []string{"d", "z", "a", "b", "c"}, ranking(collector.Weekly, "2026-03-08", 10))
		assert.Equal(t, []string{"d", "z", "a", "b", "c"}, ranking(collector.Monthly, "2026-03-31", 10))
		assert.Empty(t, ranking(collector.Weekly, "2026-03-09", 10))

		_, err := e.collector.Ranking(ctx, collector.Daily, date(day), 0)
		require.ErrorIs(t, err, collector.ErrInvalidArgument)
		_, err = e.collector.Ranking(ctx, collector.Daily, date(day), collector.MaxRankingLimit+1)
		require.ErrorIs(t, err, collector.ErrInvalidArgument)
		_, err = e.collector.Ranking(ctx, "yearly", date(day), 10)
		require.ErrorIs(t, err, collector.ErrInvalidArgument)
		_, err = e.collector.ProductMetrics(ctx, "a", collector.Daily, date("2026-03-05"), date("2026-03-04"))
		require.ErrorIs(t, err, collector.ErrInvalidArgument)
		_, err = e.collector.ProductMetrics(ctx, "a", collector.Daily, date("2025-01-01"), date("2026-03-04"))
		require.ErrorIs(t, err, collector.ErrInvalidArgument)
	})
}

func TestGapsAndPoisonEvents(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		first := sale{order: "o1", at: kst("2026-03-04", 10), lines: map[string]int64{"a": 1}}.event()
		third := sale{order: "o1", at: kst("2026-03-04", 11), lines: map[string]int64{"a": 1}, refund: true, seq: 3}.event()
		third.Topic = first.Topic // one stream: seq 2 is missing
		poison := sale{order: "o2", at: kst("2026-03-04", 10), lines: map[string]int64{"b": 1}}.event()
		poison.Payload = []byte(`{"schemaVersion":2}`)
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{first, third, poison}))
		gaps, err := e.collector.Gaps(ctx, 10)
		require.NoError(t, err)
		require.Len(t, gaps, 1)
		assert.Equal(t, collector.Gap{Stream: outbox.Stream{Topic: first.Topic, Key: "o1"}, MaxSeq: 3, Missing: 1}, gaps[0])
		dead, err := outbox.NewDeadLetterTable(e.db).List(ctx, collector.ConsumerName, 0)
		require.NoError(t, err)
		require.Len(t, dead, 1)
		assert.Equal(t, poison.ID, dead[0].ID)
		assert.Contains(t, dead[0].Error, "schema version 2")
		assert.Equal(t, int64(0), e.metricsOf(t, collector.Daily, "b", "2026-03-04").Units, "the poison event changed nothing")
	})
}
