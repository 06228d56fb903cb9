package saramaoutbox_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
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
	}, outbox.WithMaxAttempts(3), outbox.WithBackoff(time.Millisecond, 5*time.Millisecond), outbox.WithMetrics(m),
		outbox.WithDeadLetters(dlq))
	require.NoError(t, err)
	runGroup(t, k, "projector", saramaoutbox.NewConsumerHandler(c), topic)
	require.Eventually(t, func() bool {
		return m.get(&m.applied) == 49 && m.get(&m.dead) == 1
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
	require.Eventually(t, func() bool { return m.get(&m.applied) == 50 }, 3*time.Minute, 20*time.Millisecond, "the re-driven event to be applied")
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
	}, outbox.WithMetrics(m))
	require.NoError(t, err)
	h := saramaoutbox.NewConsumerHandler(c, saramaoutbox.WithBackoff(time.Millisecond, 10*time.Millisecond))

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
	assert.Zero(t, m.get(&m.dead), "the events are not at fault")

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
	require.Eventually(t, func() bool { return m.get(&m.applied) == len(want) }, 3*time.Minute, 20*time.Millisecond, "every event applied")
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
