package collector_test

// The tests of this file were first written by a session attacking the collector as a
// hostile Kafka producer would, each failing before its fix.

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/commerce/collector"
	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
)

// asMessage is ev as the relay publishes it.
func asMessage(ev outbox.Event) *sarama.ProducerMessage {
	m := saramaoutbox.Message(ev)
	m.Metadata = nil
	return m
}

// consumeOnePartition writes msgs, in order, to partition 0 of topic, as any producer can,
// and runs e's consumer on topic in a consumer group until the test ends.
func consumeOnePartition(t *testing.T, k *testenv.Kafka, e *env, topic string, msgs []*sarama.ProducerMessage) {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.MaxMessageBytes = 4 << 20
	p, err := sarama.NewSyncProducer(k.Brokers, cfg)
	require.NoError(t, err)
	defer p.Close()
	for _, m := range msgs {
		m.Topic, m.Partition = topic, 0
		_, _, err := p.SendMessage(m)
		require.NoError(t, err)
	}
	runGroup(t, k.Brokers, collector.ConsumerName, testkit.Must(saramaoutbox.NewConsumerHandler(e.consumer,
		saramaoutbox.WithBackoff(10*time.Millisecond, 50*time.Millisecond)))(t), topic)
}

// lockLookalike is one event whose units overflow int64 within the event itself (two lines
// of one product at price 0, amount 0: checkAmounts passes) and whose product ID holds
// the text SQLite uses for a busy database.
func lockLookalike(t *testing.T, order string) outbox.Event {
	return edited(t, sale{order: order, at: kst("2026-03-04", 10), lines: map[string]int64{"x": 1}}, func(oe *commerce.OrderEvent) {
		half := int64(math.MaxInt64/2 + 1)
		oe.Lines = []commerce.EventLine{
			{ProductID: "database is locked", Qty: half, UnitPrice: 0, Amount: 0},
			{ProductID: "database is locked", Qty: half, UnitPrice: 0, Amount: 0},
		}
		oe.Subtotal, oe.AmountDue = 0, 0
	})
}

// TestHostileOverflowErrorReadAsLockContention: the collector's (non-permanent) overflow
// error quotes the product ID; sqlutil.IsRetryable matches any error's text for "database
// is locked", so the outbox takes it for lock contention: Deliver returns it instead of
// dead-lettering the event, at every delivery, for ever.
func TestHostileOverflowErrorReadAsLockContention(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		ev := lockLookalike(t, "evil")
		for i := range 3 {
			err := e.consumer.Deliver(ctx, []outbox.Event{ev})
			assert.NoError(t, err, "delivery %d: the poison event should be dead-lettered, not returned as contention", i+1)
		}
		dead, err := outbox.NewDeadLetterTable(e.db).List(ctx, collector.ConsumerName, 0)
		require.NoError(t, err)
		assert.Len(t, dead, 1, "the event is dead-lettered")
	})
}

// TestHostileLockLookalikeHoldsThePartition: the same event written to Kafka by a hostile
// producer, followed by a genuine sale on the same partition: the ConsumerHandler retried
// the hostile one for ever and the genuine sale was never counted.
func TestHostileLockLookalikeHoldsThePartition(t *testing.T) {
	db := testenv.SQLite(t)
	e := newEnv(t, db)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "payments")
	bad := lockLookalike(t, "o1")
	good := sale{order: "o2", at: kst("2026-03-04", 11), lines: map[string]int64{"a": 3}}.event()
	consumeOnePartition(t, k, e, topic, []*sarama.ProducerMessage{asMessage(bad), asMessage(good)})
	assert.Eventually(t, func() bool {
		return e.metricsOf(t, collector.Daily, "a", "2026-03-04").Units == 3
	}, 20*time.Second, 100*time.Millisecond, "the genuine sale behind the hostile message is never applied: the partition is held")
}

// TestHostileSaleReplayedUnderAnotherIDCountsTwice: commerce writes an order's sale once,
// as "<order>-payment-completed" keyed by the order; the collector deduplicates only on
// the event ID and never ties the payload to it, so the same sale re-sent under any other
// ID is counted again.
func TestHostileSaleReplayedUnderAnotherIDCountsTwice(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		real := sale{order: "o1", at: kst("2026-03-04", 10), lines: map[string]int64{"a": 2}}.event()
		replay := real
		replay.ID = "o1-payment-completed-again"
		replay.Key = "anything"
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{real}))
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{replay}))
		assert.Equal(t, collector.Metrics{Orders: 1, Units: 2, Revenue: 2000, NetUnits: 2, NetRevenue: 2000},
			e.metricsOf(t, collector.Daily, "a", "2026-03-04"), "order o1's one sale counted once")
	})
}

// TestHostileAbsurdQuantityPoisonsTheDay: a sale of MaxInt64 units at price 0 passes
// checkAmounts (commerce bounds a line to MaxQty = 999 units and a price to 1..MaxPrice);
// the product tops the ranking with 9.2e18 units, and every genuine sale of that product
// on that day now overflows and is dead-lettered instead of counted.
func TestHostileAbsurdQuantityPoisonsTheDay(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		evil := edited(t, sale{order: "evil", at: kst("2026-03-04", 9), lines: map[string]int64{"a": 1}}, func(oe *commerce.OrderEvent) {
			oe.Lines[0].Qty, oe.Lines[0].UnitPrice, oe.Lines[0].Amount = math.MaxInt64, 0, 0
			oe.Subtotal, oe.AmountDue = 0, 0
		})
		genuine := sale{order: "o1", at: kst("2026-03-04", 10), lines: map[string]int64{"a": 1}}.event()
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{evil}))
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{genuine}))
		dead, err := outbox.NewDeadLetterTable(e.db).List(ctx, collector.ConsumerName, 0)
		require.NoError(t, err)
		var ids []string
		for _, d := range dead {
			ids = append(ids, d.ID)
		}
		assert.Equal(t, []string{evil.ID}, ids, "the absurd sale is dead-lettered, the genuine one counted")
		top, err := e.collector.Ranking(ctx, collector.Daily, date("2026-03-04"), 10)
		require.NoError(t, err)
		for _, r := range top {
			assert.LessOrEqual(t, r.NetUnits, int64(commerce.MaxQty), "product %s ranked with %d units", r.ProductID, r.NetUnits)
		}
	})
}

// TestHostileProductIDCommerceCannotWriteIsRanked: ProductMetrics refuses a product ID
// commerce could not have written (not 1..64 printable ASCII bytes), but Handle takes it:
// it lands in the daily rows and the public ranking, where no per-product query can read
// it back.
func TestHostileProductIDCommerceCannotWriteIsRanked(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		for _, id := range []string{"<img src=x onerror=alert(1)> 상품", "a\tb", "\u202egnp.exe"} {
			ev := sale{order: "o-" + id, at: kst("2026-03-04", 10), lines: map[string]int64{id: 500}}.event()
			ev.ID = "o" + string(rune('0'+len(id)%10)) + "-payment-completed"
			require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{ev}))
		}
		top, err := e.collector.Ranking(ctx, collector.Daily, date("2026-03-04"), 10)
		require.NoError(t, err)
		for _, r := range top {
			_, err := e.collector.ProductMetrics(ctx, r.ProductID, collector.Daily, date("2026-03-04"), date("2026-03-04"))
			assert.NoError(t, err, "ranked product %q cannot be read back", r.ProductID)
		}
		assert.Empty(t, top, "no product commerce could not have sold is ranked")
	})
}

// TestHostileForeignEventsCorruptGaps: Gaps counts events per stream (seen) against the
// highest sequence number, whatever their IDs and types: a foreign message on the stream
// with a repeated sequence number hides a real missing event, and one with sequence
// MaxInt64 reports 9.2e18 missing events that can never arrive.
func TestHostileForeignEventsCorruptGaps(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		first := sale{order: "o1", at: kst("2026-03-04", 10), lines: map[string]int64{"a": 1}}.event()
		third := sale{order: "o1", at: kst("2026-03-04", 11), lines: map[string]int64{"a": 1}, refund: true, seq: 3}.event()
		third.Topic = first.Topic // seq 2 is missing
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{first, third}))
		foreign := outbox.Event{ID: "junk-1", Topic: first.Topic, Key: "o1", Type: "junk", Payload: []byte(`{}`), Seq: 1}
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{foreign}))
		gaps, err := e.collector.Gaps(ctx, 10)
		require.NoError(t, err)
		assert.Equal(t, []collector.Gap{{Stream: outbox.Stream{Topic: first.Topic, Key: "o1"}, MaxSeq: 3, Missing: 1}}, gaps,
			"seq 2 of o1 is still missing")

		huge := outbox.Event{ID: "junk-2", Topic: first.Topic, Key: "o2", Type: "junk", Payload: []byte(`{}`), Seq: math.MaxInt64}
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{huge}))
		gaps, err = e.collector.Gaps(ctx, 10)
		require.NoError(t, err)
		for _, g := range gaps {
			assert.Less(t, g.Missing, int64(1000), "stream %s/%s reports %d missing events", g.Topic, g.Key, g.Missing)
		}
	})
}

// TestHostileBarrageThenGenuineSale writes, on one partition, messages a hostile producer
// can write (tombstones, no headers, repeated and malformed outbox headers, keys a column
// cannot take, a deeply nested payload, absurd dates) and then a genuine sale: the
// partition must not be held, the process must not crash, the sale must be counted once.
func TestHostileBarrageThenGenuineSale(t *testing.T) {
	testenv.EachDB(t, func(t *testing.T, db *bun.DB) {
		e := newEnv(t, db)
		k := testenv.NewKafka(t)
		topic := k.Topic(t, "payments")
		hdr := func(kv ...string) []sarama.RecordHeader {
			var h []sarama.RecordHeader
			for i := 0; i < len(kv); i += 2 {
				h = append(h, sarama.RecordHeader{Key: []byte(kv[i]), Value: []byte(kv[i+1])})
			}
			return h
		}
		saleBody := string(sale{order: "o1", at: kst("2026-03-04", 10), lines: map[string]int64{"a": 1}}.event().Payload)
		pc := commerce.EventPaymentCompleted
		msgs := []*sarama.ProducerMessage{
			{}, // a tombstone: nil key, nil value, no headers
			{Headers: hdr(saramaoutbox.HeaderID, "t1", saramaoutbox.HeaderType, pc)}, // typed tombstone
			{Key: sarama.StringEncoder("o1"), Value: sarama.StringEncoder(saleBody), Headers: hdr(
				saramaoutbox.HeaderID, "d1", saramaoutbox.HeaderID, "d2", saramaoutbox.HeaderType, pc,
				saramaoutbox.HeaderSeq, "-5", saramaoutbox.HeaderSeq, "abc")},
			{Key: sarama.StringEncoder(strings.Repeat("k", 300)), Value: sarama.StringEncoder(`{}`), Headers: hdr(saramaoutbox.HeaderID, "long-key", saramaoutbox.HeaderType, "x")},
			{Key: sarama.ByteEncoder([]byte{0xff, 0xfe, 0}), Value: sarama.StringEncoder(`{}`), Headers: hdr(saramaoutbox.HeaderID, "bad-utf8-key", saramaoutbox.HeaderType, "x")},
			{Key: sarama.StringEncoder("o2"), Value: sarama.StringEncoder(strings.Repeat("[", 900<<10)), Headers: hdr(saramaoutbox.HeaderID, "deep", saramaoutbox.HeaderType, pc)},
			{Key: sarama.StringEncoder("o3"), Value: sarama.StringEncoder(strings.Replace(saleBody, "2026-03-04", "9999-12-31", 1)), Headers: hdr(saramaoutbox.HeaderID, "far", saramaoutbox.HeaderType, pc)},
			{Key: sarama.StringEncoder("o4"), Value: sarama.StringEncoder(`{"schemaVersion":1,"lines":null,"at":"2026-03-04T01:00:00Z"}`), Headers: hdr(saramaoutbox.HeaderID, "nolines", saramaoutbox.HeaderType, pc, saramaoutbox.HeaderCreatedAt, "0000-01-01T00:00:00Z")},
			{Key: sarama.StringEncoder("o5"), Value: sarama.StringEncoder(saleBody), Headers: hdr(saramaoutbox.HeaderID, "id ", saramaoutbox.HeaderType, pc)},
			{Key: sarama.StringEncoder("o6"), Value: sarama.StringEncoder(saleBody), Headers: hdr(saramaoutbox.HeaderID, strings.Repeat("é", 40), saramaoutbox.HeaderType, pc)},
			{Key: sarama.StringEncoder("o7"), Value: sarama.StringEncoder(saleBody), Headers: hdr(saramaoutbox.HeaderID, "ctl\x01", saramaoutbox.HeaderType, pc, "", "", "\xff", "\xfe")},
			{Key: sarama.StringEncoder("o8"), Value: sarama.StringEncoder(saleBody), Headers: hdr(saramaoutbox.HeaderID, "unknown-type", saramaoutbox.HeaderType, "order-exploded")},
			{Key: sarama.StringEncoder("o9"), Value: sarama.StringEncoder(strings.Replace(saleBody, `"productId":"a"`, `"productId":"`+strings.Repeat("p", 100)+`"`, 1)), Headers: hdr(saramaoutbox.HeaderID, "long-product", saramaoutbox.HeaderType, pc)},
		}
		good := sale{order: "g1", at: kst("2026-03-04", 11), lines: map[string]int64{"b": 3}}.event()
		consumeOnePartition(t, k, e, topic, append(msgs, asMessage(good)))
		require.Eventually(t, func() bool {
			return e.metricsOf(t, collector.Daily, "b", "2026-03-04").Units == 3
		}, 90*time.Second, 100*time.Millisecond, "the genuine sale after the barrage is applied")
		top, err := e.collector.Ranking(ctx, collector.Daily, date("2026-03-04"), 10)
		require.NoError(t, err)
		require.Len(t, top, 1, "only the genuine sale is counted: %+v", top)
		assert.Equal(t, "b", top[0].ProductID)
		assert.EqualValues(t, 3, top[0].NetUnits)
	})
}

// TestHostileSaleDatedPastYear9999: a sale at 9999-12-31T20:00Z is on 10000-01-01 in
// Seoul: its day does not fit day CHAR(10) nor parse as a date.
func TestHostileSaleDatedPastYear9999(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		ev := sale{order: "late", at: time.Date(9999, 12, 31, 20, 0, 0, 0, time.UTC), lines: map[string]int64{"a": 7}}.event()
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{ev}))
		_, err := e.collector.RollupDirty(ctx)
		assert.NoError(t, err)
		var days []string
		require.NoError(t, e.db.NewSelect().Table(collector.TableDaily).Column("day").Scan(ctx, &days))
		dead, err := outbox.NewDeadLetterTable(e.db).List(ctx, collector.ConsumerName, 0)
		require.NoError(t, err)
		assert.Len(t, dead, 1, "dead-lettered: no query can name its day")
		for _, d := range days {
			_, err := collector.ParseDate(d)
			assert.NoError(t, err, "a daily row on day %q, which no query can name", d)
		}
	})
}

// TestHostileCalendarEdges: the first and last weeks and months a date can name. A sale on
// 0000-01-01 (a Saturday, which time.Parse takes) marks the week starting -0001-12-27,
// which no rollup can parse: RollupDirty failed at every call for good (SQLite; MySQL
// refused the 11-character start and dead-lettered the event only after its retries).
// Sales in December 9999 were left out of their month's rollup, and those of the week of
// 9999-12-27 out of their week's: the rollup summed the days before "10000-01-01" as text,
// which no day is.
func TestHostileCalendarEdges(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		yearZero := sale{order: "zero", at: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), lines: map[string]int64{"a": 1}}.event()
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{yearZero}))
		dead, err := outbox.NewDeadLetterTable(e.db).List(ctx, collector.ConsumerName, 0)
		require.NoError(t, err)
		if assert.Len(t, dead, 1, "the sale of year 0 is dead-lettered") {
			assert.Contains(t, dead[0].Error, "year", "at once, as a permanent error: %s", dead[0].Error)
		}
		_, err = e.collector.RollupDirty(ctx)
		assert.NoError(t, err, "no rollup mark that can never be rolled up")
		_, err = collector.ParseDate("0000-01-01")
		assert.ErrorIs(t, err, collector.ErrInvalidArgument, "no date of year 0 is parsed")

		last := sale{order: "last", at: kst("9999-12-28", 12), lines: map[string]int64{"b": 4}}.event()
		require.NoError(t, e.consumer.Deliver(ctx, []outbox.Event{last}))
		e.rollup(t)
		want := collector.Metrics{Orders: 1, Units: 4, Revenue: 4000, NetUnits: 4, NetRevenue: 4000}
		assert.Equal(t, want, e.metricsOf(t, collector.Daily, "b", "9999-12-28"))
		assert.Equal(t, want, e.metricsOf(t, collector.Weekly, "b", "9999-12-28"), "the last week's rollup")
		assert.Equal(t, want, e.metricsOf(t, collector.Monthly, "b", "9999-12-28"), "the last month's rollup")
		top, err := e.collector.Ranking(ctx, collector.Monthly, date("9999-12-31"), 10)
		require.NoError(t, err)
		assert.Len(t, top, 1, "December 9999's ranking")
	})
}

// TestHostileSaleWithoutATime: commerce stamps every event with the time it happened
// ("at"). A sale or refund without one decoded to Go's zero time and was counted on
// 0001-01-01 (09:00 in Seoul), in that day's, week's and month's ranking, instead of
// being dead-lettered as an event commerce could not have written.
func TestHostileSaleWithoutATime(t *testing.T) {
	stores(t, func(t *testing.T, e *env) {
		noTime := func(s sale) outbox.Event {
			ev := s.event()
			var body map[string]any
			require.NoError(t, json.Unmarshal(ev.Payload, &body))
			delete(body, "at")
			var err error
			ev.Payload, err = json.Marshal(body)
			require.NoError(t, err)
			return ev
		}
		poison := []outbox.Event{
			noTime(sale{order: "o1", at: kst("2026-03-04", 10), lines: map[string]int64{"a": 2}}),
			noTime(sale{order: "o2", at: kst("2026-03-04", 10), lines: map[string]int64{"b": 1}, refund: true}),
		}
		good := sale{order: "o3", at: kst("2026-03-04", 11), lines: map[string]int64{"a": 1}}.event()
		require.NoError(t, e.consumer.Deliver(ctx, append(poison, good)))
		e.rollup(t)
		dead, err := outbox.NewDeadLetterTable(e.db).List(ctx, collector.ConsumerName, 0)
		require.NoError(t, err)
		var ids []string
		for _, d := range dead {
			ids = append(ids, d.ID)
		}
		assert.ElementsMatch(t, []string{poison[0].ID, poison[1].ID}, ids, "the events without a time are dead-lettered")
		var days []string
		require.NoError(t, e.db.NewSelect().Table(collector.TableDaily).Column("day").Scan(ctx, &days))
		assert.Equal(t, []string{"2026-03-04"}, days, "only the genuine sale's day is counted")
		for _, p := range []collector.Period{collector.Daily, collector.Weekly, collector.Monthly} {
			top, err := e.collector.Ranking(ctx, p, date("0001-01-01"), 10)
			require.NoError(t, err)
			assert.Empty(t, top, "%s ranking of 0001-01-01", p)
		}
	})
}
