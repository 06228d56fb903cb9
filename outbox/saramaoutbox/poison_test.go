package saramaoutbox_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
)

// TestPoisonEventIsSetAsideWhileEveryOtherKeyFlows: two 1.5 MB events (written by a writer
// whose limit is above the producer's, as before the limit existed) among small events on
// other keys. The relay publishes the small ones, sets the big ones aside in the outbox
// with their reason, and the events after them on their own keys wait. After Skip, the
// skipped key's events flow in order without it. After Redrive with the producer's and
// the topic's limits raised, the other is published in its place, then the events that
// waited. kcat sees the same.
func TestPoisonEventIsSetAsideWhileEveryOtherKeyFlows(t *testing.T) {
	db := openDB(t)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	ctx := context.Background()
	lax, err := outbox.NewWriter(outbox.WithMaxEventBytes(4 << 20))
	require.NoError(t, err)
	big := []byte(`"` + strings.Repeat("x", 1_500_000) + `"`)
	add := func(key string, payload []byte) outbox.Event {
		evs, err := lax.Add(ctx, db, outbox.Event{Topic: topic, Key: key, Type: "order.changed", Payload: payload})
		require.NoError(t, err)
		return evs[0]
	}
	small := func(i int) []byte { return fmt.Appendf(nil, `{"i":%d}`, i) }
	var want []outbox.Event // what must reach the topic in the end
	want = append(want, addEvents(t, db, topic, 40, 10, 2, 2)...)
	var skipped, redriven []outbox.Event
	for i := range 4 {
		p := small(i)
		if i == 1 {
			p = big
		}
		skipped = append(skipped, add("order-skip", p))
		redriven = append(redriven, add("order-redrive", p))
	}
	want = append(want, addEvents(t, db, topic, 40, 10, 2, 2)...)

	// The relay runs with the default producer: 1.5 MB is over its limit.
	m := &metrics{}
	r, err := outbox.NewRelay(db, newPublisher(t, k), outbox.WithBatchSize(50), outbox.WithInterval(10*time.Millisecond),
		outbox.WithBackoff(10*time.Millisecond, 200*time.Millisecond), outbox.WithMetrics(m))
	require.NoError(t, err)
	runCtx, stopRelay := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- r.Run(runCtx) }()
	waiting := len(skipped) + len(redriven) - 2 // all but seq 1 of each poisoned key
	require.Eventually(t, func() bool { return outboxtest.Unsent(t, db) == waiting }, 3*time.Minute, 20*time.Millisecond, "the small events of the other keys to go out")
	require.Eventually(t, func() bool { return m.get(&m.relayDead) == 2 }, 3*time.Minute, 20*time.Millisecond, "both big events set aside")
	dead, err := r.DeadLetters(ctx, 0)
	require.NoError(t, err)
	require.Len(t, dead, 2)
	assert.ElementsMatch(t, []string{skipped[1].ID, redriven[1].ID}, []string{dead[0].ID, dead[1].ID})
	for _, dl := range dead {
		assert.Contains(t, dl.Error, "MaxMessageBytes", "the reason says why")
		assert.Len(t, dl.Payload, len(big))
	}
	time.Sleep(100 * time.Millisecond) // a few more rounds: the events behind the big ones still wait
	assert.Equal(t, waiting, outboxtest.Unsent(t, db))
	assert.Equal(t, 2*3+2, m.get(&m.failed), "no failure but the two refusals (with the two events after each) and their confirmation alone")
	want = append(want, skipped[0], redriven[0])
	checkDelivery(t, readTopic(t, k, topic, len(want)), want)

	// Skip: the rest of order-skip flows, in order, without the big event.
	require.NoError(t, r.Skip(ctx, skipped[1].ID))
	require.Eventually(t, func() bool { return outboxtest.Unsent(t, db) == waiting-3 }, 3*time.Minute, 20*time.Millisecond, "order-skip to drain") // the skipped one and the two after it
	stopRelay()
	require.NoError(t, <-stopped)

	// Redrive once the limits are raised, the producer's and the topic's: published in its
	// place, then the rest. (A broker refusing the batch of a message the producer let
	// through takes sarama through a batch-retry path with a data race of its own; see
	// TestProducingFailedNamesEveryMessage for how such a refusal is reported.)
	raised := saramaoutbox.ProducerConfig()
	raised.Producer.MaxMessageBytes = 4 << 20
	pub, err := saramaoutbox.NewPublisher(k.Brokers, raised)
	require.NoError(t, err)
	t.Cleanup(func() { pub.Close() })
	r2, err := outbox.NewRelay(db, pub, outbox.WithMetrics(m))
	require.NoError(t, err)
	admin, err := sarama.NewClusterAdminFromClient(newClient(t, k))
	require.NoError(t, err)
	limit := strconv.Itoa(8 << 20)
	require.NoError(t, admin.AlterConfig(sarama.TopicResource, topic, map[string]*string{"max.message.bytes": &limit}, false))
	want = append(want, addEvents(t, db, topic, 12, 10, 1, 12)...)
	require.NoError(t, r2.Redrive(ctx, redriven[1].ID))
	for outboxtest.Unsent(t, db) > 0 {
		_, err := r2.RelayOnce(ctx)
		require.NoError(t, err)
	}
	dead, err = r2.DeadLetters(ctx, 0)
	require.NoError(t, err)
	assert.Empty(t, dead)
	want = append(want, skipped[2], skipped[3])
	want = append(want, redriven[1:]...)
	copies := checkDelivery(t, readTopic(t, k, topic, len(want)), want)
	assert.Zero(t, copies[skipped[1].ID], "the skipped event never reaches Kafka")
	assert.Equal(t, 2, m.get(&m.relayDead), "nothing set aside but the two big events")

	// librdkafka sees the same: per key in order, the redriven event whole, no skipped one.
	seqs := make(map[string][]int64)
	for _, msg := range kcatRead(t, k, topic) {
		seqs[msg.key] = append(seqs[msg.key], msg.seq)
		if msg.headers[saramaoutbox.HeaderID] == redriven[1].ID {
			assert.Len(t, msg.payload, len(big))
		}
	}
	assert.Equal(t, []int64{1, 3, 4}, seqs["order-skip"])
	assert.Equal(t, []int64{1, 2, 3, 4}, seqs["order-redrive"])
}

// TestKafkaDown30sNothingLostAppliedOnce: Kafka stops for 30 s while writers keep adding
// events and the relay and a consumer group run. When it is back, every event reaches the
// topic (kcat checks: each key in order) and the consumer, which applies each exactly
// once (its processed-events table absorbs whatever comes twice), per key in sequence
// order, and nothing is set aside.
func TestKafkaDown30sNothingLostAppliedOnce(t *testing.T) {
	db := openDB(t)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	m := &metrics{}
	r, err := outbox.NewRelay(db, newPublisher(t, k), outbox.WithBatchSize(50), outbox.WithInterval(10*time.Millisecond),
		outbox.WithBackoff(10*time.Millisecond, time.Second), outbox.WithMetrics(m))
	require.NoError(t, err)
	runRelay(t, r)
	c, err := outbox.NewConsumer(db, "projector", func(ctx context.Context, tx bun.Tx, events []outbox.Event) error {
		return outboxtest.Record(ctx, tx, "projector", events)
	}, outbox.WithMetrics(m))
	require.NoError(t, err)
	group, err := sarama.NewConsumerGroup(k.Brokers, "projector", saramaoutbox.ConsumerConfig())
	require.NoError(t, err)
	groupCtx, stopGroup := context.WithCancel(context.Background())
	groupDone := make(chan error, 1)
	go func() {
		groupDone <- saramaoutbox.NewConsumerHandler(c, saramaoutbox.WithBackoff(10*time.Millisecond, time.Second)).Run(groupCtx, group, topic)
	}()
	defer func() {
		stopGroup()
		require.NoError(t, <-groupDone)
		t.Logf("consumer group errors during the outage: %v", group.Close())
	}()

	var want []outbox.Event
	write := func(n int) { want = append(want, addEvents(t, db, topic, n, 20, 4, 1)...) }
	write(400)
	require.Eventually(t, func() bool { return m.get(&m.applied) > 0 }, 3*time.Minute, 20*time.Millisecond, "events flowing")
	write(200)
	k.Stop(t)
	t.Log("Kafka stopped for 30 s")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		write(40)
		time.Sleep(time.Second)
	}
	require.Positive(t, outboxtest.Unsent(t, db), "events wait in the outbox while Kafka is down")
	k.Start(t)
	t.Log("Kafka back")
	write(200)
	require.Eventually(t, outboxtest.Drained(db), 3*time.Minute, 20*time.Millisecond, "the relay to drain the outbox")
	require.Eventually(t, func() bool { return countApplied(t, db) >= len(want) }, 3*time.Minute, 20*time.Millisecond, "the consumer to apply every event")

	byID := make(map[string]outbox.Event, len(want))
	for _, ev := range want {
		byID[ev.ID] = ev
	}
	onTopic := make(map[string]int)
	next := make(map[string]int64)
	for _, msg := range kcatRead(t, k, topic) {
		id := msg.headers[saramaoutbox.HeaderID]
		require.Contains(t, byID, id)
		if onTopic[id]++; onTopic[id] == 1 {
			require.Equal(t, next[msg.key]+1, msg.seq, "key %s reaches Kafka in order", msg.key)
			next[msg.key] = msg.seq
		}
	}
	require.Len(t, onTopic, len(want), "every event reached Kafka")

	rows := outboxtest.Applied(t, db, "projector")
	seen := make(map[string]int)
	last := make(map[string]int64)
	for _, row := range rows {
		seen[row.EventID]++
		require.Equal(t, last[row.Key]+1, row.Seq, "key %s applied in order without a gap", row.Key)
		last[row.Key] = row.Seq
	}
	for _, ev := range want {
		require.Equal(t, 1, seen[ev.ID], "event %s applied %d times", ev.ID, seen[ev.ID])
	}
	assert.Len(t, rows, len(want))
	assert.Equal(t, len(want), m.get(&m.applied))
	assert.Zero(t, m.get(&m.dead), "the consumer gave up on nothing")
	assert.Zero(t, m.get(&m.relayDead), "an outage is no reason to set anything aside")
	copies := 0
	for _, n := range onTopic {
		copies += n
	}
	t.Logf("Kafka down 30 s: %d events, %d failed publish attempts, %d extra copies on the topic, %d deliveries skipped as duplicates, all applied once",
		len(want), m.get(&m.failed), copies-len(want), m.get(&m.dups))
}
