package saramaoutbox_test

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/saramaoutbox"
)

// TestKcatReadsWhatTheRelayProduced cross-checks the relay's messages with another Kafka
// client (librdkafka's kcat, read_committed): every event with its key, payload and
// headers, each key in sequence order.
func TestKcatReadsWhatTheRelayProduced(t *testing.T) {
	db := openDB(t)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	want := addEvents(t, db, topic, 40, 4, 1, 4)
	relayAll(t, db, newPublisher(t, k))

	byID := make(map[string]outbox.Event)
	for _, ev := range want {
		byID[ev.ID] = ev
	}
	seen := make(map[string]bool)
	last := make(map[string]int64)
	msgs := kcatRead(t, k, topic)
	require.Len(t, msgs, len(want))
	for _, m := range msgs {
		ev, ok := byID[m.headers[saramaoutbox.HeaderID]]
		require.True(t, ok, "kcat message %+v: unknown event", m)
		assert.False(t, seen[ev.ID], "event %s twice", ev.ID)
		seen[ev.ID] = true
		assert.Equal(t, ev.Key, m.key)
		assert.Equal(t, string(ev.Payload), m.payload)
		assert.Equal(t, ev.Type, m.headers[saramaoutbox.HeaderType])
		assert.Equal(t, ev.Seq, m.seq)
		assert.Equal(t, last[ev.Key]+1, m.seq, "key %s in order", ev.Key)
		last[ev.Key] = m.seq
	}
	assert.Len(t, seen, len(want))
}

// kcatMessage is a message as kcat printed it.
type kcatMessage struct {
	key, payload string
	headers      map[string]string
	seq          int64
}

// kcatRead returns what kcat (librdkafka, read_committed) reads from topic, from the
// beginning to the end, partition by partition, but readTopic's sentinels.
func kcatRead(t testing.TB, k *testenv.Kafka, topic string) []kcatMessage {
	t.Helper()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is not installed (Debian: apt-get install kcat; scripts/testimages.sh does it); this test needs it to cross-check the relay's messages with librdkafka: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-C", "-b", strings.Join(k.Brokers, ","), "-t", topic,
		"-o", "beginning", "-e", "-q", "-X", "isolation.level=read_committed",
		"-f", "%p\t%k\t%h\t%s\n").Output()
	require.NoError(t, err, "kcat: %s", out)
	var msgs []kcatMessage
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.SplitN(line, "\t", 4)
		require.Len(t, f, 4, "kcat line %.200q", line)
		m := kcatMessage{key: f[1], payload: f[3], headers: make(map[string]string)}
		for _, kv := range strings.Split(f[2], ",") {
			name, value, _ := strings.Cut(kv, "=")
			m.headers[name] = value
		}
		if m.payload == "sentinel" && m.headers[saramaoutbox.HeaderID] == "" {
			continue // written by readTopic
		}
		m.seq, err = strconv.ParseInt(m.headers[saramaoutbox.HeaderSeq], 10, 64)
		require.NoError(t, err, "kcat line %.200q", line)
		msgs = append(msgs, m)
	}
	return msgs
}
