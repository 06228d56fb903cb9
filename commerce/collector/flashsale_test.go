package collector_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/commerce/commercetest"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/observe"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
	"github.com/commercekit/commercekit/payment"
)

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
				runGroup(t, e.Kafka.Brokers, collector.ConsumerName, saramaoutbox.NewConsumerHandler(col.consumer), e.Topic)
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
				runGroup(t, e.Kafka.Brokers, collector.ConsumerName+"-replay", saramaoutbox.NewConsumerHandler(again), e.Topic)
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
