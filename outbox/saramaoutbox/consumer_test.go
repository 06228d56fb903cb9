package saramaoutbox_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
)

func relayAll(t testing.TB, db *bun.DB, pub outbox.Publisher) {
	t.Helper()
	r, err := outbox.NewRelay(db, pub, outbox.WithBatchSize(500))
	require.NoError(t, err)
	for outboxtest.Unsent(t, db) > 0 {
		_, err := r.RelayOnce(context.Background())
		require.NoError(t, err)
	}
}

// TestPoisonEventGoesToTheDeadLetterTopic: an event the handler cannot apply is retried,
// then produced to the dead-letter topic with its error and attempt count in headers, and
// the other events flow on. Once the cause is fixed, Redrive sends it back to its topic
// and it is applied, once.
func TestPoisonEventGoesToTheDeadLetterTopic(t *testing.T) {
	db := openDB(t)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	dlqTopic := saramaoutbox.DefaultDeadLetterTopic(topic)
	ctx := context.Background()
	pub := newPublisher(t, k)
	want := addEvents(t, db, topic, 50, 5, 1, 5)
	poison := want[17]
	relayAll(t, db, pub)
	dlq, err := saramaoutbox.NewDeadLetterQueue(k.Brokers, nil, nil)
	require.NoError(t, err)
	defer dlq.Close()

	var fixed, redrivenClean atomic.Bool
	m := &metrics{}
	c, err := outbox.NewConsumer(db, "projector", func(ctx context.Context, tx bun.Tx, events []outbox.Event) error {
		for _, ev := range events {
			if ev.ID != poison.ID {
				continue
			}
			if !fixed.Load() {
				return errors.New("cannot apply: product 42 unknown")
			}
			redrivenClean.Store(ev.Headers[saramaoutbox.HeaderDeadTopic] == "" && ev.Seq == poison.Seq)
		}
		return outboxtest.Record(ctx, tx, "projector", events)
	}, outbox.WithMaxAttempts(3), outbox.WithBackoff(time.Millisecond, 5*time.Millisecond), outbox.WithObserver(m),
		outbox.WithDeadLetters(dlq))
	require.NoError(t, err)
	runGroup(t, k, "projector", testkit.Must(saramaoutbox.NewConsumerHandler(c))(t), topic)
	require.Eventually(t, func() bool {
		return m.get("applied") == 49 && m.get("dead_lettered") == 1
	}, 3*time.Minute, 20*time.Millisecond, "49 events applied and one dead-lettered")
	for _, r := range outboxtest.Applied(t, db, "projector") {
		require.NotEqual(t, poison.ID, r.EventID)
	}

	dead := readTopic(t, k, dlqTopic, 1)
	var letters []*sarama.ConsumerMessage
	for _, p := range dead {
		letters = append(letters, p...)
	}
	require.Len(t, letters, 1)
	dl := saramaoutbox.EventFromMessage(letters[0])
	assert.Equal(t, poison.ID, dl.ID)
	assert.Equal(t, poison.Key, dl.Key)
	assert.Equal(t, poison.Seq, dl.Seq)
	assert.Equal(t, string(poison.Payload), string(dl.Payload))
	assert.Equal(t, topic, dl.Headers[saramaoutbox.HeaderDeadTopic])
	assert.Equal(t, "projector", dl.Headers[saramaoutbox.HeaderDeadConsumer])
	assert.Equal(t, "3", dl.Headers[saramaoutbox.HeaderDeadAttempts])
	assert.Contains(t, dl.Headers[saramaoutbox.HeaderDeadError], "product 42 unknown")

	fixed.Store(true)
	client := newClient(t, k)
	n, err := saramaoutbox.Redrive(ctx, client, pub, dlqTopic, "projector-redrive")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	require.Eventually(t, func() bool { return m.get("applied") == 50 }, 3*time.Minute, 20*time.Millisecond, "the re-driven event to be applied")
	assert.True(t, redrivenClean.Load(), "the re-driven event keeps its sequence and loses the dead-letter headers")
	n, err = saramaoutbox.Redrive(ctx, client, pub, dlqTopic, "projector-redrive")
	require.NoError(t, err)
	assert.Zero(t, n, "progress was committed under the redrive group")

	rows := outboxtest.Applied(t, db, "projector")
	seen := make(map[string]int)
	for _, r := range rows {
		seen[r.EventID]++
	}
	for _, ev := range want {
		assert.Equal(t, 1, seen[ev.ID], "event %s", ev.ID)
	}
}

// TestOffsetsCommittedOnlyAfterEffectsAreDurable: while the consumer cannot record its
// work (inserts into its processed-events table fail, after the handler ran), every
// attempt rolls back: it applies nothing, dead-letters nothing and commits no offset; a
// restarted group then applies every event exactly once.
func TestOffsetsCommittedOnlyAfterEffectsAreDurable(t *testing.T) {
	db := openDB(t)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	ctx := context.Background()
	want := addEvents(t, db, topic, 200, 10, 2, 5)
	relayAll(t, db, newPublisher(t, k))
	_, err := db.ExecContext(ctx, "ALTER TABLE outbox_processed ADD COLUMN breaks_inserts INT NOT NULL")
	require.NoError(t, err)

	var calls atomic.Int64
	m := &metrics{}
	c, err := outbox.NewConsumer(db, "projector", func(ctx context.Context, tx bun.Tx, events []outbox.Event) error {
		calls.Add(1)
		return outboxtest.Record(ctx, tx, "projector", events)
	}, outbox.WithObserver(m))
	require.NoError(t, err)
	h := testkit.Must(saramaoutbox.NewConsumerHandler(c, saramaoutbox.WithBackoff(time.Millisecond, 10*time.Millisecond)))(t)

	group, err := sarama.NewConsumerGroup(k.Brokers, "projector", saramaoutbox.ConsumerConfig())
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.Run(runCtx, group, topic) }()
	require.Eventually(t, func() bool { return calls.Load() >= 5 }, 3*time.Minute, 20*time.Millisecond, "the handler to be tried")
	stop()
	require.NoError(t, <-done)
	require.NoError(t, group.Close())
	assert.Zero(t, countApplied(t, db), "every attempt rolled back")
	assert.Zero(t, m.get("dead_lettered"), "the events are not at fault")

	client := newClient(t, k)
	om, err := sarama.NewOffsetManagerFromClient("projector", client)
	require.NoError(t, err)
	partitions, err := client.Partitions(topic)
	require.NoError(t, err)
	for _, p := range partitions {
		pom, err := om.ManagePartition(topic, p)
		require.NoError(t, err)
		next, _ := pom.NextOffset()
		assert.Equal(t, sarama.OffsetOldest, next, "partition %d: no offset committed", p)
		pom.AsyncClose()
	}
	require.NoError(t, om.Close())

	_, err = db.ExecContext(ctx, "ALTER TABLE outbox_processed DROP COLUMN breaks_inserts")
	require.NoError(t, err)
	runGroup(t, k, "projector", h, topic)
	require.Eventually(t, func() bool { return m.get("applied") == len(want) }, 3*time.Minute, 20*time.Millisecond, "every event applied")
	seen := make(map[string]int)
	for _, r := range outboxtest.Applied(t, db, "projector") {
		seen[r.EventID]++
	}
	for _, ev := range want {
		require.Equal(t, 1, seen[ev.ID])
	}
	assert.Len(t, seen, len(want))
}

// TestEventFromMessageRoundTrip: what Message writes, EventFromMessage reads back.
func TestEventFromMessageRoundTrip(t *testing.T) {
	ev := outbox.Event{
		ID: "01890a5d-ac96-774b-bcce-b302099a8057", Topic: "orders", Key: "order-1", Type: "order.placed",
		Payload: []byte(`{"total":1000}`), Headers: map[string]string{"trace": "t-1", "tenant": "a"},
		CreatedAt: time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC), Seq: 42,
	}
	pm := saramaoutbox.Message(ev)
	assert.Equal(t, ev.ID, pm.Metadata)
	var headers []*sarama.RecordHeader
	names := make([]string, 0, len(pm.Headers))
	for i := range pm.Headers {
		headers = append(headers, &pm.Headers[i])
		names = append(names, string(pm.Headers[i].Key))
	}
	assert.Equal(t, "outbox-id,outbox-type,outbox-seq,outbox-created-at,tenant,trace", strings.Join(names, ","))
	key, _ := pm.Key.Encode()
	value, _ := pm.Value.Encode()
	got := saramaoutbox.EventFromMessage(&sarama.ConsumerMessage{Topic: pm.Topic, Key: key, Value: value, Headers: headers})
	assert.Equal(t, ev, got)

	foreign := saramaoutbox.EventFromMessage(&sarama.ConsumerMessage{Topic: "orders", Value: []byte("x")})
	assert.Empty(t, foreign.ID, "a message from elsewhere has no ID, and a Consumer dead-letters it")
}

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
		outbox.WithBackoff(10*time.Millisecond, 200*time.Millisecond), outbox.WithObserver(m))
	require.NoError(t, err)
	runCtx, stopRelay := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- r.Run(runCtx) }()
	waiting := len(skipped) + len(redriven) - 2 // all but seq 1 of each poisoned key
	require.Eventually(t, func() bool { return outboxtest.Unsent(t, db) == waiting }, 3*time.Minute, 20*time.Millisecond, "the small events of the other keys to go out")
	require.Eventually(t, func() bool { return m.get("relay_dead_lettered") == 2 }, 3*time.Minute, 20*time.Millisecond, "both big events set aside")
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
	assert.Equal(t, 2*3+2, m.get("publish_failed"), "no failure but the two refusals (with the two events after each) and their confirmation alone")
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
	r2, err := outbox.NewRelay(db, pub, outbox.WithObserver(m))
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
	assert.Equal(t, 2, m.get("relay_dead_lettered"), "nothing set aside but the two big events")

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
		outbox.WithBackoff(10*time.Millisecond, time.Second), outbox.WithObserver(m))
	require.NoError(t, err)
	runRelay(t, r)
	c, err := outbox.NewConsumer(db, "projector", func(ctx context.Context, tx bun.Tx, events []outbox.Event) error {
		return outboxtest.Record(ctx, tx, "projector", events)
	}, outbox.WithObserver(m))
	require.NoError(t, err)
	group, err := sarama.NewConsumerGroup(k.Brokers, "projector", saramaoutbox.ConsumerConfig())
	require.NoError(t, err)
	groupCtx, stopGroup := context.WithCancel(context.Background())
	groupDone := make(chan error, 1)
	h := testkit.Must(saramaoutbox.NewConsumerHandler(c, saramaoutbox.WithBackoff(10*time.Millisecond, time.Second)))(t)
	go func() { groupDone <- h.Run(groupCtx, group, topic) }()
	defer func() {
		stopGroup()
		require.NoError(t, <-groupDone)
		t.Logf("consumer group errors during the outage: %v", group.Close())
	}()

	var want []outbox.Event
	write := func(n int) { want = append(want, addEvents(t, db, topic, n, 20, 4, 1)...) }
	write(400)
	require.Eventually(t, func() bool { return m.get("applied") > 0 }, 3*time.Minute, 20*time.Millisecond, "events flowing")
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
	assert.Equal(t, len(want), m.get("applied"))
	assert.Zero(t, m.get("dead_lettered"), "the consumer gave up on nothing")
	assert.Zero(t, m.get("relay_dead_lettered"), "an outage is no reason to set anything aside")
	copies := 0
	for _, n := range onTopic {
		copies += n
	}
	t.Logf("Kafka down 30 s: %d events, %d failed publish attempts, %d extra copies on the topic, %d deliveries skipped as duplicates, all applied once",
		len(want), m.get("publish_failed"), copies-len(want), m.get("duplicate"))
}

// TestNewConsumerHandlerRefusesBadOptions: every invalid option value is refused, naming
// the option (Redrive applies the same options the same way).
func TestNewConsumerHandlerRefusesBadOptions(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.SQLite(t))
	c := testkit.Must(outbox.NewConsumer(db, "x", outboxtest.RecordingHandler("x")))(t)
	testkit.RefusesBadOptions(t, func(opts ...saramaoutbox.Option) (*saramaoutbox.ConsumerHandler, error) {
		return saramaoutbox.NewConsumerHandler(c, opts...)
	}, map[string]saramaoutbox.Option{
		"WithLogger: nil":       saramaoutbox.WithLogger(nil),
		"WithBackoff: -1ms..1s": saramaoutbox.WithBackoff(-time.Millisecond, time.Second),
		"WithBackoff: 2s..1s":   saramaoutbox.WithBackoff(2*time.Second, time.Second),
	})
}
