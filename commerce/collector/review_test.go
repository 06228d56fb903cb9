package collector_test

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/outbox"
)

// TestInconsistentAmountsAreDeadLettered feeds payloads that decode but whose amounts do
// not add up (a line larger than the subtotal, a negative discount, quantities or amounts
// below zero, sums past int64): each is dead-lettered as permanent, the batch's good
// events are applied, nothing panics and no row is touched by the bad ones.
func TestInconsistentAmountsAreDeadLettered(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		good := sale{order: "ok", at: kst("2026-03-04", 10), lines: map[string]int64{"a": 2}}.event()
		bad := func(order string, edit func(*commerce.OrderEvent)) outbox.Event {
			ev := sale{order: order, at: kst("2026-03-04", 10), lines: map[string]int64{"x": 1, "y": 1}}.event()
			var oe commerce.OrderEvent
			require.NoError(t, json.Unmarshal(ev.Payload, &oe))
			edit(&oe)
			body, err := json.Marshal(oe)
			require.NoError(t, err)
			ev.Payload = body
			return ev
		}
		poison := []outbox.Event{
			// Would divide a 128-bit product by a too-small subtotal: bits.Div64 panics.
			bad("huge-line", func(oe *commerce.OrderEvent) {
				oe.Subtotal, oe.Discount = 1, -(1 << 62)
				oe.Lines[0].Amount = 1 << 10
			}),
			bad("negative-qty", func(oe *commerce.OrderEvent) { oe.Lines[0].Qty = -5 }),
			bad("lines-not-subtotal", func(oe *commerce.OrderEvent) { oe.Subtotal = 5 }),
			bad("discount-over-subtotal", func(oe *commerce.OrderEvent) { oe.Discount = oe.Subtotal + 1 }),
			bad("overflow", func(oe *commerce.OrderEvent) {
				oe.Lines[0].Amount, oe.Lines[1].Amount = math.MaxInt64, math.MaxInt64
				oe.Subtotal = -2
			}),
		}
		require.NotPanics(t, func() {
			require.NoError(t, e.consumer.Deliver(ctx, append([]outbox.Event{good}, poison...)))
		})
		dead, err := outbox.NewDeadLetterTable(e.db).List(ctx, collector.ConsumerName, 0)
		require.NoError(t, err)
		var ids []string
		for _, d := range dead {
			ids = append(ids, d.ID)
		}
		want := make([]string, len(poison))
		for i, p := range poison {
			want[i] = p.ID
		}
		assert.ElementsMatch(t, want, ids)
		assert.Equal(t, collector.Metrics{Orders: 1, Units: 2, Revenue: 2000, NetUnits: 2, NetRevenue: 2000},
			e.metricsOf(t, collector.Daily, "a", "2026-03-04"))
		for _, p := range []string{"x", "y"} {
			assert.Equal(t, collector.Metrics{}, e.metricsOf(t, collector.Daily, p, "2026-03-04"), p)
		}
	})
}

// TestHostileReads asks for metrics and rankings with product IDs and dates a hostile
// client sends: each is answered (empty) or refused with ErrInvalidArgument, never a
// database error.
func TestHostileReads(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		for _, id := range []string{"\xff\xfe", "a\x00b", strings.Repeat("가", 5000), "'; DROP TABLE x; --", ""} {
			for _, p := range []collector.Period{collector.Daily, collector.Weekly, collector.Monthly} {
				got, err := e.collector.ProductMetrics(ctx, id, p, date("2026-03-01"), date("2026-03-04"))
				if err != nil {
					assert.ErrorIs(t, err, collector.ErrInvalidArgument, "%q %s", id, p)
				} else {
					assert.Empty(t, got)
				}
			}
		}
		for _, d := range []string{"0000-01-01", "0001-01-01", "9999-12-31"} {
			for _, p := range []collector.Period{collector.Daily, collector.Weekly, collector.Monthly} {
				_, err := e.collector.Ranking(ctx, p, date(d), 10)
				assert.NoError(t, err, "%s %s", d, p)
				_, err = e.collector.ProductMetrics(ctx, "a", p, date(d), date(d))
				assert.NoError(t, err, "%s %s", d, p)
			}
		}
		_, err := e.collector.Gaps(ctx, -1)
		assert.ErrorIs(t, err, collector.ErrInvalidArgument)
	})
}

// TestOneFailingRollupBlocksNoOther: a week whose sums overflow int64 cannot be rolled up
// (it stays marked, and RollupDirty says why), but every other period still is.
func TestOneFailingRollupBlocksNoOther(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		huge := func(order string, at time.Time) outbox.Event {
			ev := sale{order: order, at: at, lines: map[string]int64{"a": 1}}.event()
			var oe commerce.OrderEvent
			require.NoError(t, json.Unmarshal(ev.Payload, &oe))
			oe.Lines[0].UnitPrice, oe.Lines[0].Amount = math.MaxInt64/2+1, math.MaxInt64/2+1
			oe.Subtotal, oe.AmountDue = oe.Lines[0].Amount, oe.Lines[0].Amount
			body, err := json.Marshal(oe)
			require.NoError(t, err)
			ev.Payload = body
			return ev
		}
		// Monday and Tuesday of the week of 2026-03-02: the week's and March's sums overflow.
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{huge("o1", kst("2026-03-02", 10)), huge("o2", kst("2026-03-03", 10))}))
		// A later week and month, sorted after the failing ones.
		require.NoError(t, e.consumer.Deliver(ctx, events(sale{order: "o3", at: kst("2026-04-14", 10), lines: map[string]int64{"b": 2}})))
		_, err := e.collector.RollupDirty(ctx)
		require.Error(t, err, "the overflowing periods are reported")
		assert.Equal(t, int64(2), e.metricsOf(t, collector.Weekly, "b", "2026-04-14").Units, "the other week was rolled up")
		assert.Equal(t, int64(2), e.metricsOf(t, collector.Monthly, "b", "2026-04-14").Units, "the other month was rolled up")
		var marks int64
		marks, err = e.db.NewSelect().Table(collector.TableDirty).Count(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(2), marks, "the failing week and month stay marked")
	})
}

// TestDailySumOverflowFailsClosed: two sales of one product on one day whose revenue sums
// past int64, in one batch or in two, never leave a wrapped-around (negative) or
// unreadable number: the sale that would overflow is dead-lettered, the first counted.
func TestDailySumOverflowFailsClosed(t *testing.T) {
	for _, oneBatch := range []bool{true, false} {
		t.Run(fmt.Sprintf("oneBatch=%v", oneBatch), func(t *testing.T) {
			stores(t, func(t *testing.T, e *env) {
				huge := func(order string) outbox.Event {
					ev := sale{order: order, at: kst("2026-03-02", 10), lines: map[string]int64{"a": 1}}.event()
					var oe commerce.OrderEvent
					require.NoError(t, json.Unmarshal(ev.Payload, &oe))
					oe.Lines[0].UnitPrice, oe.Lines[0].Amount = math.MaxInt64/2+1, math.MaxInt64/2+1
					oe.Subtotal, oe.AmountDue = oe.Lines[0].Amount, oe.Lines[0].Amount
					body, err := json.Marshal(oe)
					require.NoError(t, err)
					ev.Payload = body
					return ev
				}
				if oneBatch {
					require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{huge("o1"), huge("o2")}))
				} else {
					require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{huge("o1")}))
					require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{huge("o2")}))
				}
				m := e.metricsOf(t, collector.Daily, "a", "2026-03-02")
				assert.Equal(t, collector.Metrics{Orders: 1, Units: 1, Revenue: math.MaxInt64/2 + 1, NetUnits: 1, NetRevenue: math.MaxInt64/2 + 1}, m)
				dead, err := outbox.NewDeadLetterTable(e.db).List(ctx, collector.ConsumerName, 0)
				require.NoError(t, err)
				require.Len(t, dead, 1)
				assert.Equal(t, "o2-"+commerce.EventPaymentCompleted, dead[0].ID)
				top, err := e.collector.Ranking(ctx, collector.Daily, date("2026-03-02"), 10)
				require.NoError(t, err)
				require.Len(t, top, 1)
			})
		})
	}
}

// TestMidnightKSTAcrossAYear: sales at 23:30 and 00:30 Seoul time on New Year's Eve and
// Day (14:30 and 15:30 UTC on the same UTC day) fall on two days and two months but one
// ISO week (2026-W53, Monday 2026-12-28).
func TestMidnightKSTAcrossAYear(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		late := kst("2026-12-31", 23).Add(30 * time.Minute)
		early := kst("2027-01-01", 0).Add(30 * time.Minute)
		require.Equal(t, late.UTC().Format(time.DateOnly), early.UTC().Format(time.DateOnly), "one UTC day")
		require.NoError(t, e.consumer.Deliver(ctx, events(
			sale{order: "o1", at: late, lines: map[string]int64{"a": 1}},
			sale{order: "o2", at: early, lines: map[string]int64{"a": 2}})))
		e.rollup(t)
		assert.Equal(t, int64(1), e.metricsOf(t, collector.Daily, "a", "2026-12-31").Units)
		assert.Equal(t, int64(2), e.metricsOf(t, collector.Daily, "a", "2027-01-01").Units)
		assert.Equal(t, int64(1), e.metricsOf(t, collector.Monthly, "a", "2026-12-15").Units)
		assert.Equal(t, int64(2), e.metricsOf(t, collector.Monthly, "a", "2027-01-31").Units)
		assert.Equal(t, "2026-12-28", collector.PeriodStart(collector.Weekly, date("2027-01-03")))
		for _, d := range []string{"2026-12-28", "2027-01-03"} {
			assert.Equal(t, int64(3), e.metricsOf(t, collector.Weekly, "a", d).Units, d)
		}
		top, err := e.collector.Ranking(ctx, collector.Weekly, date("2027-01-01"), 1)
		require.NoError(t, err)
		require.Len(t, top, 1)
		assert.Equal(t, int64(3), top[0].NetUnits)
	})
}
