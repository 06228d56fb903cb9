package collector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var ctx = context.Background()

// env is a collector and its outbox consumer on a fresh database.
type env struct {
	db        *bun.DB
	collector *collector.Collector
	consumer  *outbox.Consumer
}

// stores runs fn on SQLite and on MySQL/MariaDB.
func stores(t *testing.T, fn func(t *testing.T, e *env)) {
	testenv.EachDB(t, func(t *testing.T, db *bun.DB) { fn(t, newEnv(t, db)) })
}

func newEnv(t testing.TB, db *bun.DB, opts ...collector.Option) *env {
	require.NoError(t, outbox.CreateSchema(ctx, db))
	require.NoError(t, collector.CreateSchema(ctx, db))
	c, err := collector.New(db, opts...)
	require.NoError(t, err)
	cons, err := c.NewConsumer(outbox.WithBackoff(time.Millisecond, time.Millisecond), outbox.WithMaxAttempts(2))
	require.NoError(t, err)
	return &env{db: db, collector: c, consumer: cons}
}

// sale is a synthetic order event: what commerce writes on payment (or, with refund, on
// the cancellation of a paid order).
type sale struct {
	order  string
	at     time.Time
	lines  map[string]int64 // product → units, at 1,000 each
	refund bool
	seq    int64
}

func (s sale) event() outbox.Event {
	typ, status, seq := commerce.EventPaymentCompleted, commerce.StatusPaid, int64(1)
	oe := commerce.OrderEvent{SchemaVersion: 1, OrderID: s.order, UserID: "u", Currency: "KRW", At: s.at.UTC()}
	if s.refund {
		typ, status, seq = commerce.EventOrderCancelled, commerce.StatusCancelled, 2
		paid := s.at.Add(-time.Hour)
		oe.PaidAt = &paid
	}
	if s.seq != 0 {
		seq = s.seq
	}
	oe.Status = status
	for _, p := range slices.Sorted(maps.Keys(s.lines)) {
		oe.Lines = append(oe.Lines, commerce.EventLine{ProductID: p, Qty: s.lines[p], UnitPrice: 1000, Amount: 1000 * s.lines[p]})
		oe.Subtotal += 1000 * s.lines[p]
	}
	oe.AmountDue = oe.Subtotal
	body, err := json.Marshal(oe)
	if err != nil {
		panic(err)
	}
	topic, _ := commerce.DefaultTopics().Of(typ)
	return outbox.Event{ID: s.order + "-" + typ, Topic: topic, Key: s.order, Type: typ, Payload: body, Seq: seq, CreatedAt: s.at}
}

// created is the order-created event of an order (seq 1 on the orders' topic), which the
// collector only counts in its stream.
func created(order string, at time.Time) outbox.Event {
	return outbox.Event{ID: order + "-" + commerce.EventOrderCreated, Topic: commerce.DefaultTopic, Key: order,
		Type: commerce.EventOrderCreated, Payload: []byte(`{"schemaVersion":1}`), Seq: 1, CreatedAt: at}
}

func events(sales ...sale) []outbox.Event {
	out := make([]outbox.Event, len(sales))
	for i, s := range sales {
		out[i] = s.event()
	}
	return out
}

// kst is a time in Seoul.
func kst(day string, hour int) time.Time {
	d, err := time.ParseInLocation(time.DateOnly, day, collector.Seoul())
	if err != nil {
		panic(err)
	}
	return d.Add(time.Duration(hour) * time.Hour)
}

// date parses s as time.Parse does (year 0 included, which ParseDate refuses), for the
// calls of the library's reads with such a date.
func date(s string) time.Time {
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return d
}

// metricsOf returns the product's metrics of the period holding day (zero when none).
func (e *env) metricsOf(t testing.TB, p collector.Period, product, day string) collector.Metrics {
	t.Helper()
	got, err := e.collector.ProductMetrics(ctx, product, p, date(day), date(day))
	require.NoError(t, err)
	require.LessOrEqual(t, len(got), 1)
	if len(got) == 0 {
		return collector.Metrics{}
	}
	return got[0].Metrics
}

// snapshot reads every daily and rollup row, to compare states.
func (e *env) snapshot(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		"SELECT day, product_id, orders, units, revenue, cancellations, units_refunded, revenue_refunded, net_units, net_revenue FROM " + collector.TableDaily + " ORDER BY day, product_id",
		"SELECT period, start, product_id, orders, units, revenue, cancellations, units_refunded, revenue_refunded, net_units, net_revenue FROM " + collector.TableRollups + " ORDER BY period, start, product_id",
	} {
		rows, err := e.db.QueryContext(ctx, q)
		require.NoError(t, err)
		cols, err := rows.Columns()
		require.NoError(t, err)
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			require.NoError(t, rows.Scan(ptrs...))
			out = append(out, fmt.Sprintf("%s", vals))
		}
		require.NoError(t, rows.Err())
		require.NoError(t, rows.Close())
	}
	return out
}

func (e *env) rollup(t testing.TB) {
	t.Helper()
	for {
		n, err := e.collector.RollupDirty(ctx)
		require.NoError(t, err)
		if n == 0 {
			return
		}
	}
}

// runGroup runs h in consumer group group on topics until the test ends.
func runGroup(t testing.TB, brokers []string, group string, h *saramaoutbox.ConsumerHandler, topics ...string) {
	g, err := sarama.NewConsumerGroup(brokers, group, saramaoutbox.ConsumerConfig())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, g.Close()) }) // after h.Run returned
	testkit.Background(t, func(ctx context.Context) error { return h.Run(ctx, g, topics...) })
}

// edited returns the sale's event with its payload edited.
func edited(t *testing.T, s sale, edit func(*commerce.OrderEvent)) outbox.Event {
	t.Helper()
	ev := s.event()
	var oe commerce.OrderEvent
	require.NoError(t, json.Unmarshal(ev.Payload, &oe))
	edit(&oe)
	body, err := json.Marshal(oe)
	require.NoError(t, err)
	ev.Payload = body
	return ev
}
