package collector_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/observe"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
	"github.com/commercekit/commercekit/payment"
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

// TestInconsistentAmountsAreDeadLettered feeds payloads that decode but whose amounts do
// not add up (a line larger than the subtotal, a negative discount, quantities or amounts
// below zero, sums past int64): each is dead-lettered as permanent, the batch's good
// events are applied, nothing panics and no row is touched by the bad ones.
func TestInconsistentAmountsAreDeadLettered(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		good := sale{order: "ok", at: kst("2026-03-04", 10), lines: map[string]int64{"a": 2}}.event()
		bad := func(order string, edit func(*commerce.OrderEvent)) outbox.Event {
			return edited(t, sale{order: order, at: kst("2026-03-04", 10), lines: map[string]int64{"x": 1, "y": 1}}, edit)
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

// maxSale is the largest sale of product "a" commerce can write: MaxQty units at MaxPrice.
func maxSale(t *testing.T, order string, at time.Time) outbox.Event {
	return edited(t, sale{order: order, at: at, lines: map[string]int64{"a": commerce.MaxQty}}, func(oe *commerce.OrderEvent) {
		oe.Lines[0].UnitPrice, oe.Lines[0].Amount = commerce.MaxPrice, maxRevenue
		oe.Subtotal, oe.AmountDue = maxRevenue, maxRevenue
	})
}

// maxRevenue is maxSale's revenue.
const maxRevenue = commerce.MaxQty * commerce.MaxPrice

// counted stores, as if counted before, product "a"'s daily row of day with revenue: the
// sums of thousands of the largest sales, which the tests reach at once.
func counted(t *testing.T, e *env, day string, revenue int64) {
	t.Helper()
	_, err := e.db.ExecContext(ctx, "INSERT INTO "+collector.TableDaily+" (day, product_id, orders, units, revenue, "+
		"cancellations, units_refunded, revenue_refunded, net_units, net_revenue, updated_at) VALUES (?, 'a', 1, 1, ?, 0, 0, 0, 1, ?, ?)",
		day, revenue, revenue, time.Now().UTC())
	require.NoError(t, err)
}

// TestOneFailingRollupBlocksNoOther: a week whose sums overflow int64 cannot be rolled up
// (it stays marked, and RollupDirty says why), but every other period still is.
func TestOneFailingRollupBlocksNoOther(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		// Monday and Tuesday of the week of 2026-03-02: the week's and March's sums overflow.
		counted(t, e, "2026-03-02", math.MaxInt64/2+1)
		counted(t, e, "2026-03-03", math.MaxInt64/2+1)
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{maxSale(t, "o1", kst("2026-03-02", 10))}))
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
// past int64 (with what was counted before), in one batch or in two, never leave a
// wrapped-around (negative) or unreadable number: the sale that would overflow is
// dead-lettered, the first counted.
func TestDailySumOverflowFailsClosed(t *testing.T) {
	for _, oneBatch := range []bool{true, false} {
		t.Run(fmt.Sprintf("oneBatch=%v", oneBatch), func(t *testing.T) {
			stores(t, func(t *testing.T, e *env) {
				before := int64(math.MaxInt64 - maxRevenue*3/2)
				counted(t, e, "2026-03-02", before)
				huge := func(order string) outbox.Event { return maxSale(t, order, kst("2026-03-02", 10)) }
				if oneBatch {
					require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{huge("o1"), huge("o2")}))
				} else {
					require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{huge("o1")}))
					require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{huge("o2")}))
				}
				m := e.metricsOf(t, collector.Daily, "a", "2026-03-02")
				assert.Equal(t, collector.Metrics{Orders: 2, Units: 1 + commerce.MaxQty, Revenue: before + maxRevenue,
					NetUnits: 1 + commerce.MaxQty, NetRevenue: before + maxRevenue}, m)
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

// TestFlashSale runs a flash sale on three products through commerce (buyers racing,
// coupons and points, some paid orders cancelled), relays the events, and checks the
// collector against the stores: units sold per product equal the inventory's sold count,
// units refunded those of the cancelled orders, and revenue the amounts paid. Then the
// events are delivered again from the start, which changes nothing. With Kafka the collector
// consumes as a consumer group, and the redelivery is a second group reading from offset 0.
func TestFlashSale(t *testing.T) {
	for _, cfg := range []struct {
		name string
		new  commercetest.Config
	}{{"SQLite", commercetest.SQLite}, {"MySQL+Redis+Kafka", commercetest.MySQL}} {
		t.Run(cfg.name, func(t *testing.T) {
			e := cfg.new(t)
			col := newEnv(t, e.DB, collector.WithClock(e.Clock.Now))
			products := []string{e.Product(t, 10_000, 15), e.Product(t, 7_000, 10), e.Product(t, 3_000, 30)}
			tpl := e.CouponTemplate(t, 1_000)

			var (
				mu   sync.Mutex
				paid []commerce.Order
			)
			var soldOut atomic.Int64
			testkit.Parallel(40, 8, func(i int) {
				user := e.ID("buyer")
				e.GivePoints(t, user, 800)
				coupon := e.GiveCoupon(t, tpl, user)
				o, err := e.Service.PlaceOrder(ctx, commerce.PlaceOrderRequest{UserID: user, CouponID: coupon, Points: 500,
					Lines:          []commerce.Line{{ProductID: products[i%3], Qty: int64(1 + i%2)}, {ProductID: products[(i+1)%3], Qty: 1}},
					IdempotencyKey: "sale"})
				if errors.Is(err, commerce.ErrOutOfStock) {
					soldOut.Add(1)
					return
				}
				if !assert.NoError(t, err) {
					return
				}
				o, err = e.Service.Pay(ctx, commerce.PayRequest{OrderID: o.ID, UserID: user, Method: payment.MethodCard,
					Token: "tok_ok", IdempotencyKey: "sale"})
				if !assert.NoError(t, err) || !assert.Equal(t, commerce.StatusPaid, o.Status) {
					return
				}
				mu.Lock()
				paid = append(paid, o)
				mu.Unlock()
			})
			require.Greater(t, soldOut.Load(), int64(0), "the sale sold out")
			require.Greater(t, len(paid), 4)
			cancelled := paid[:4]
			for i, o := range cancelled {
				cancelled[i], _ = e.Service.Cancel(ctx, o.ID, commerce.Actor{UserID: o.UserID})
				require.Equal(t, commerce.StatusCancelled, cancelled[i].Status)
			}
			e.Drain(t)

			var total int
			require.NoError(t, e.DB.NewSelect().Table(outbox.TableEvents).ColumnExpr("COUNT(*)").Scan(ctx, &total))
			if e.Kafka == nil {
				deliverOutbox(t, col)
			} else {
				runGroup(t, e.Kafka.Brokers, collector.ConsumerName, testkit.Must(saramaoutbox.NewConsumerHandler(col.consumer))(t), e.Topic)
			}
			waitProcessed(t, col, total)
			col.rollup(t)

			day := e.Clock.Now().In(collector.Seoul()).Format(time.DateOnly)
			var wantRevenue, wantRefunded int64
			for i, o := range paid {
				if i < len(cancelled) {
					wantRefunded += o.Points + o.AmountDue
				}
				wantRevenue += o.Points + o.AmountDue
			}
			var gotRevenue, gotRefunded int64
			for _, p := range products {
				var refunded, net int64
				for i, o := range paid {
					for _, l := range o.Lines {
						if l.ProductID != p {
							continue
						}
						if i < len(cancelled) {
							refunded += l.Qty
						} else {
							net += l.Qty
						}
					}
				}
				st, err := e.Inventory.Stock(ctx, p)
				require.NoError(t, err)
				m := col.metricsOf(t, collector.Daily, p, day)
				assert.Equal(t, st.Sold, m.NetUnits, "units sold of %s, less those returned = the inventory's sold count", p)
				assert.Equal(t, refunded, m.UnitsRefunded, p)
				assert.Equal(t, net, m.NetUnits, p)
				assert.Equal(t, m, col.metricsOf(t, collector.Weekly, p, day), "the week is that one day")
				gotRevenue += m.Revenue
				gotRefunded += m.RevenueRefunded
			}
			assert.Equal(t, wantRevenue, gotRevenue, "revenue = the amounts paid")
			assert.Equal(t, wantRefunded, gotRefunded, "refunds = the amounts of the cancelled orders")
			gaps, err := col.collector.Gaps(ctx, 10)
			require.NoError(t, err)
			assert.Empty(t, gaps)

			// Everything again from the start: nothing changes.
			before := col.snapshot(t)
			replay := &counting{}
			again, err := col.collector.NewConsumer(outbox.WithObserver(replay))
			require.NoError(t, err)
			if e.Kafka == nil {
				col.consumer = again
				deliverOutbox(t, col)
			} else {
				runGroup(t, e.Kafka.Brokers, collector.ConsumerName+"-replay", testkit.Must(saramaoutbox.NewConsumerHandler(again))(t), e.Topic)
			}
			require.Eventually(t, func() bool { return replay.dups.Load() >= int64(total) }, 30*time.Second, 20*time.Millisecond)
			assert.Equal(t, int64(0), replay.applied.Load())
			col.rollup(t)
			assert.Equal(t, before, col.snapshot(t))
		})
	}
}

// counting counts a consumer's applied and duplicate events.
type counting struct {
	applied, dups atomic.Int64
}

func (c *counting) Observe(e observe.Event) {
	switch e.Name {
	case "applied":
		c.applied.Add(e.N)
	case "duplicate":
		c.dups.Add(e.N)
	}
}

// deliverOutbox delivers every event of the outbox table to the env's consumer, in
// insertion order, as the embedded dispatcher would.
func deliverOutbox(t testing.TB, e *env) {
	t.Helper()
	var rows []struct {
		ID      string    `bun:"id"`
		Topic   string    `bun:"topic"`
		Key     string    `bun:"aggregate_key"`
		Seq     int64     `bun:"seq"`
		Type    string    `bun:"event_type"`
		Payload []byte    `bun:"payload"`
		At      time.Time `bun:"created_at"`
	}
	require.NoError(t, e.db.NewSelect().Table(outbox.TableEvents).
		Column("id", "topic", "aggregate_key", "seq", "event_type", "payload", "created_at").OrderExpr("pos").Scan(ctx, &rows))
	events := make([]outbox.Event, len(rows))
	for i, r := range rows {
		events[i] = outbox.Event{ID: r.ID, Topic: r.Topic, Key: r.Key, Seq: r.Seq, Type: r.Type, Payload: r.Payload, CreatedAt: r.At}
	}
	require.NoError(t, e.consumer.Deliver(ctx, events))
}

// waitProcessed waits until the collector has applied n events.
func waitProcessed(t testing.TB, e *env, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		var got int
		err := e.db.NewSelect().Table(outbox.TableProcessed).ColumnExpr("COUNT(*)").Where("consumer = ?", collector.ConsumerName).Scan(ctx, &got)
		return err == nil && got == n
	}, 30*time.Second, 20*time.Millisecond, "the collector applies %d events", n)
}

// TestNewRefusesBadOptions: every invalid option value is refused, naming the option.
func TestNewRefusesBadOptions(t *testing.T) {
	db := testenv.SQLite(t)
	testkit.RefusesBadOptions(t, func(opts ...collector.Option) (*collector.Collector, error) {
		return collector.New(db, opts...)
	}, map[string]collector.Option{
		"WithLocation: nil": collector.WithLocation(nil),
		"WithClock: nil":    collector.WithClock(nil),
		"WithLogger: nil":   collector.WithLogger(nil),
	}, collector.ErrInvalidArgument)
}
