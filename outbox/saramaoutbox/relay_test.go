package saramaoutbox_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
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

// TestRelay10000EventsOver100KeysInOrder: events written by concurrent transactions while
// the relay runs all reach Kafka once, each key on one partition in sequence order, with
// the event ID, type, sequence and creation time in the headers.
func TestRelay10000EventsOver100KeysInOrder(t *testing.T) {
	db := openDB(t)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	var logs lockedBuffer
	r, err := outbox.NewRelay(db, newPublisher(t, k), outbox.WithBatchSize(500), outbox.WithInterval(10*time.Millisecond),
		outbox.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	require.NoError(t, err)
	runRelay(t, r)
	want := addEvents(t, db, topic, 10000, 100, 8, 5)
	require.Eventually(t, outboxtest.Drained(db), 3*time.Minute, 20*time.Millisecond, "the relay to drain the outbox")
	copies := checkDelivery(t, readTopic(t, k, topic, len(want)), want)
	assert.Len(t, copies, 10000)
	// A round that failed (on a loaded machine: a lock wait or a timeout) is published again:
	// duplicates then, never a loss. Without a failure there is no duplicate.
	if failed := logs.String(); strings.Contains(failed, "outbox relay round failed") {
		t.Logf("%d duplicates after failed rounds:\n%s", duplicates(copies), failed)
		return
	}
	assert.Zero(t, duplicates(copies), "no failure, no duplicate")
}

// lockedBuffer is an io.Writer for a logger that tests read while it writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRolledBackEventsNeverReachKafka: only events of committed transactions are produced.
func TestRolledBackEventsNeverReachKafka(t *testing.T) {
	db := openDB(t)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	ctx := context.Background()
	r, err := outbox.NewRelay(db, newPublisher(t, k))
	require.NoError(t, err)
	var committed []outbox.Event
	for i := range 10 {
		var evs []outbox.Event
		err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			var err error
			evs, err = outbox.Add(ctx, tx, outbox.Event{Topic: topic, Key: "order-1", Type: "x", Payload: []byte(`{}`)})
			require.NoError(t, err)
			if i%2 == 1 {
				return errors.New("rolled back")
			}
			return nil
		})
		if i%2 == 0 {
			require.NoError(t, err)
			committed = append(committed, evs...)
		}
	}
	_, err = r.RelayOnce(ctx)
	require.NoError(t, err)
	parts := readTopic(t, k, topic, len(committed))
	copies := checkDelivery(t, parts, committed)
	assert.Len(t, copies, 5)
	total := 0
	for _, p := range parts {
		total += len(p)
	}
	assert.Equal(t, 5, total, "nothing but the committed events")
}

// TestBrokerStoppedMidRunAndRestarted: with the broker down the relay backs off, keeps
// every event, and when the broker is back delivers all of them, per key in order.
func TestBrokerStoppedMidRunAndRestarted(t *testing.T) {
	db := openDB(t)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	m := &metrics{}
	r, err := outbox.NewRelay(db, newPublisher(t, k), outbox.WithBatchSize(50), outbox.WithInterval(10*time.Millisecond),
		outbox.WithBackoff(10*time.Millisecond, 200*time.Millisecond), outbox.WithObserver(m))
	require.NoError(t, err)
	runRelay(t, r)

	want := addEvents(t, db, topic, 300, 10, 2, 3)
	require.Eventually(t, func() bool { return m.get("published") > 0 }, 3*time.Minute, 20*time.Millisecond, "some events published")
	k.Stop(t)
	want = append(want, addEvents(t, db, topic, 300, 10, 2, 3)...)
	require.Eventually(t, func() bool { return m.get("publish_failed") > 0 }, 3*time.Minute, 20*time.Millisecond, "publish failures while the broker is down")
	assert.Positive(t, outboxtest.Unsent(t, db), "unsent events wait in the outbox")
	k.Start(t)
	require.Eventually(t, outboxtest.Drained(db), 3*time.Minute, 20*time.Millisecond, "the relay to drain the outbox")
	copies := checkDelivery(t, readTopic(t, k, topic, len(want)), want)
	t.Logf("broker outage: %d events, %d failed publish attempts, %d duplicates on the topic",
		len(want), m.get("publish_failed"), duplicates(copies))
}

// TestRelayKilledMidBatchAppliedExactlyOnce: a relay that dies after producing a batch and
// before marking it sent, restarted, produces that batch again (same event IDs); the
// consumer helper applies every event exactly once.
func TestRelayKilledMidBatchAppliedExactlyOnce(t *testing.T) {
	db := openDB(t)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	ctx := context.Background()
	pub := newPublisher(t, k)
	want := addEvents(t, db, topic, 1000, 20, 4, 5)

	kills := 3
	dying, err := outbox.NewRelay(db, outbox.PublisherFunc(func(ctx context.Context, events []outbox.Event) error {
		if err := pub.Publish(ctx, events); err != nil {
			return err
		}
		return errors.New("killed after producing, before marking")
	}), outbox.WithBatchSize(100))
	require.NoError(t, err)
	for range kills {
		_, err := dying.RelayOnce(ctx)
		require.Error(t, err)
	}
	require.Equal(t, len(want), outboxtest.Unsent(t, db), "nothing was marked sent")
	restarted, err := outbox.NewRelay(db, pub, outbox.WithBatchSize(100))
	require.NoError(t, err)
	for outboxtest.Unsent(t, db) > 0 {
		_, err := restarted.RelayOnce(ctx)
		require.NoError(t, err)
	}
	// The first batch was produced and committed four times: 300 duplicates on the topic.
	total := len(want) + kills*100

	m := &metrics{}
	c, err := outbox.NewConsumer(db, "projector", func(ctx context.Context, tx bun.Tx, events []outbox.Event) error {
		return outboxtest.Record(ctx, tx, "projector", events)
	}, outbox.WithObserver(m))
	require.NoError(t, err)
	runGroup(t, k, "projector", testkit.Must(saramaoutbox.NewConsumerHandler(c))(t), topic)
	require.Eventually(t, func() bool { return m.get("applied")+m.get("duplicate") >= total }, 3*time.Minute, 20*time.Millisecond, "the consumer to see every message")

	rows := outboxtest.Applied(t, db, "projector")
	seen := make(map[string]int)
	last := make(map[string]int64)
	for _, r := range rows {
		seen[r.EventID]++
		require.Greater(t, r.Seq, last[r.Key], "key %s applied out of order", r.Key)
		last[r.Key] = r.Seq
	}
	for _, ev := range want {
		require.Equal(t, 1, seen[ev.ID], "event %s applied %d times", ev.ID, seen[ev.ID])
	}
	assert.Len(t, rows, len(want))
	assert.Equal(t, kills*100, m.get("duplicate"), "the duplicates were skipped by the processed-events table")
}

// TestTwoRelaysProduceEachEventOnce: two relays with their own producers, running while
// writers add events, produce each event exactly once, each key in order.
func TestTwoRelaysProduceEachEventOnce(t *testing.T) {
	db := openDB(t)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	m := &metrics{}
	for range 2 {
		r, err := outbox.NewRelay(db, newPublisher(t, k), outbox.WithBatchSize(50),
			outbox.WithInterval(5*time.Millisecond), outbox.WithObserver(m))
		require.NoError(t, err)
		runRelay(t, r)
	}
	want := addEvents(t, db, topic, 3000, 50, 6, 3)
	require.Eventually(t, outboxtest.Drained(db), 3*time.Minute, 20*time.Millisecond, "the relays to drain the outbox")
	copies := checkDelivery(t, readTopic(t, k, topic, len(want)), want)
	for _, ev := range want {
		require.Equal(t, 1, copies[ev.ID], "event %s produced %d times", ev.ID, copies[ev.ID])
	}
	assert.Equal(t, len(want), m.get("published"))
}

// TestPublisherRejectsUnsafeConfig: the guarantees rest on the producer settings.
func TestPublisherRejectsUnsafeConfig(t *testing.T) {
	cases := map[string]func(c *sarama.Config){
		"not idempotent":       func(c *sarama.Config) { c.Producer.Idempotent = false },
		"acks from leader":     func(c *sarama.Config) { c.Producer.RequiredAcks = 1 },
		"5 requests in flight": func(c *sarama.Config) { c.Net.MaxOpenRequests = 5 },
		"no successes":         func(c *sarama.Config) { c.Producer.Return.Successes = false },
	}
	for name, breakIt := range cases {
		cfg := saramaoutbox.ProducerConfig()
		breakIt(cfg)
		_, err := saramaoutbox.NewPublisher([]string{"127.0.0.1:1"}, cfg)
		assert.ErrorIs(t, err, outbox.ErrInvalidConfig, name)
	}
	require.NoError(t, saramaoutbox.CheckProducerConfig(saramaoutbox.ProducerConfig()))
}

// TestPublisherConformance: the Kafka publisher keeps the outbox.Publisher promise.
func TestPublisherConformance(t *testing.T) {
	outboxtest.RunPublisher(t, func(t *testing.T) (outbox.Publisher, string, outboxtest.Received) {
		k := testenv.NewKafka(t)
		topic := k.Topic(t, "conformance")
		return newPublisher(t, k), topic, func(t *testing.T, n int) []outbox.Event {
			var got []outbox.Event
			for _, part := range readTopic(t, k, topic, n) {
				for _, m := range part {
					got = append(got, saramaoutbox.EventFromMessage(m))
				}
			}
			return got
		}
	})
}
