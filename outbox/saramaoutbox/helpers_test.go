package saramaoutbox_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/observe"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// openDB returns a fresh MySQL database with the outbox schema and the effect table.
func openDB(t testing.TB) *bun.DB { return outboxtest.Prepare(t, testenv.MySQL(t)) }

func countApplied(t testing.TB, db *bun.DB) int {
	n, err := db.NewSelect().Table("test_applied").Count(context.Background())
	require.NoError(t, err)
	return int(n)
}

// addEvents adds n events over keys keys from writers goroutines, each transaction adding
// perTx events to keys that other writers use too, and returns them.
func addEvents(t testing.TB, db *bun.DB, topic string, n, keys, writers, perTx int) []outbox.Event {
	t.Helper()
	var mu sync.Mutex
	var out []outbox.Event
	var wg sync.WaitGroup
	per := n / writers
	for w := range writers {
		wg.Go(func() {
			for i := 0; i < per; i += perTx {
				batch := make([]outbox.Event, 0, perTx)
				for j := i; j < min(i+perTx, per); j++ {
					batch = append(batch, outbox.Event{
						Topic: topic, Key: fmt.Sprintf("key-%03d", (w*per+j)%keys), Type: "test.happened",
						Payload: fmt.Appendf(nil, `{"writer":%d,"i":%d}`, w, j),
					})
				}
				evs, err := outbox.Add(context.Background(), db, batch...)
				if err != nil {
					t.Errorf("adding events: %v", err)
					return
				}
				mu.Lock()
				out = append(out, evs...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, out, n)
	return out
}

func newPublisher(t testing.TB, k *testenv.Kafka) *saramaoutbox.Publisher {
	p, err := saramaoutbox.NewPublisher(k.Brokers, nil)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func newClient(t testing.TB, k *testenv.Kafka) sarama.Client {
	cfg := saramaoutbox.ConsumerConfig()
	c, err := sarama.NewClient(k.Brokers, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// readTopic returns, partition by partition in offset order, every message of topic a
// read_committed consumer sees (but the sentinels of earlier calls). It first writes a sentinel message to each partition
// (outside any transaction), then reads each partition up to its sentinel: everything the
// relay committed before the call is before the sentinels. It fails unless the topic holds
// at least want distinct event IDs.
func readTopic(t testing.TB, k *testenv.Kafka, topic string, want int) [][]*sarama.ConsumerMessage {
	t.Helper()
	client := newClient(t, k)
	require.NoError(t, client.RefreshMetadata(topic))
	partitions, err := client.Partitions(topic)
	require.NoError(t, err)
	cfg := sarama.NewConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	producer, err := sarama.NewSyncProducer(k.Brokers, cfg)
	require.NoError(t, err)
	defer producer.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	require.NoError(t, err)
	defer consumer.Close()

	out := make([][]*sarama.ConsumerMessage, len(partitions))
	ids := make(map[string]bool)
	for i, p := range partitions {
		_, sentinel, err := producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Partition: p, Value: sarama.StringEncoder("sentinel")})
		require.NoError(t, err)
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		require.NoError(t, err)
		for done := false; !done; {
			select {
			case m := <-pc.Messages():
				if m.Offset >= sentinel {
					done = true
					break
				}
				if len(m.Headers) == 0 && string(m.Value) == "sentinel" {
					continue // of an earlier call
				}
				out[i] = append(out[i], m)
				ids[saramaoutbox.EventFromMessage(m).ID] = true
			case err := <-pc.Errors():
				t.Fatalf("reading %s/%d: %v", topic, p, err)
			case <-time.After(time.Minute):
				t.Fatalf("reading %s/%d: no sentinel at offset %d", topic, p, sentinel)
			}
		}
		require.NoError(t, pc.Close())
	}
	require.GreaterOrEqual(t, len(ids), want, "distinct events on %s", topic)
	return out
}

// checkDelivery checks what a topic holds against the events added: every event is
// there, with its headers, and no other; each key lives on one partition; per key, the
// first copies of the events come in sequence order (1, 2, 3, ... less any event left out
// of want). It returns how many copies of each event the topic holds.
func checkDelivery(t testing.TB, parts [][]*sarama.ConsumerMessage, want []outbox.Event) map[string]int {
	t.Helper()
	byID := make(map[string]outbox.Event, len(want))
	for _, ev := range want {
		byID[ev.ID] = ev
	}
	copies := make(map[string]int)
	partitionOf := make(map[string]int)
	next := make(map[string]int64)
	wantSeqs := make(map[string][]int64) // per key, the sequence numbers expected, in order
	for _, ev := range want {
		wantSeqs[ev.Key] = append(wantSeqs[ev.Key], ev.Seq)
	}
	for _, seqs := range wantSeqs {
		slices.Sort(seqs)
	}
	for p, msgs := range parts {
		for _, m := range msgs {
			ev := saramaoutbox.EventFromMessage(m)
			orig, ok := byID[ev.ID]
			require.True(t, ok, "unknown event %q (key %s seq %d) on %s/%d@%d", ev.ID, ev.Key, ev.Seq, m.Topic, m.Partition, m.Offset)
			require.Equal(t, orig.Key, ev.Key)
			require.Equal(t, orig.Seq, ev.Seq)
			require.Equal(t, orig.Type, ev.Type)
			require.Equal(t, string(orig.Payload), string(ev.Payload))
			require.Equal(t, orig.CreatedAt, ev.CreatedAt)
			if q, seen := partitionOf[ev.Key]; seen {
				require.Equal(t, q, p, "key %s on two partitions", ev.Key)
			}
			partitionOf[ev.Key] = p
			copies[ev.ID]++
			if copies[ev.ID] == 1 {
				require.Equal(t, wantSeqs[ev.Key][0], ev.Seq, "key %s: first copy of seq %d arrives after seq %d", ev.Key, ev.Seq, next[ev.Key])
				wantSeqs[ev.Key] = wantSeqs[ev.Key][1:]
				next[ev.Key] = ev.Seq
			} else {
				require.LessOrEqual(t, ev.Seq, next[ev.Key], "a duplicate never runs ahead of its stream")
			}
		}
	}
	for _, ev := range want {
		require.Positive(t, copies[ev.ID], "event %s (key %s seq %d) never arrived", ev.ID, ev.Key, ev.Seq)
	}
	return copies
}

func duplicates(copies map[string]int) int {
	n := 0
	for _, c := range copies {
		n += c - 1
	}
	return n
}

// metrics records what the relay and consumers report.
type metrics struct{ observe.Recorder }

// get returns the sum of N over the Events named name.
func (m *metrics) get(name string) int { return int(m.Sum(name, nil)) }

// runGroup runs h in consumer group group on topics until the test ends.
func runGroup(t testing.TB, k *testenv.Kafka, group string, h *saramaoutbox.ConsumerHandler, topics ...string) {
	g, err := sarama.NewConsumerGroup(k.Brokers, group, saramaoutbox.ConsumerConfig())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, g.Close()) }) // after h.Run returned
	testkit.Background(t, func(ctx context.Context) error { return h.Run(ctx, g, topics...) })
}

// runRelay runs r until the test ends.
func runRelay(t testing.TB, r *outbox.Relay) { testkit.Background(t, r.Run) }
