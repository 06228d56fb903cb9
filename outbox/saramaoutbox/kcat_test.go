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
)

// TestKcatReadsWhatTheRelayProduced cross-checks the relay's messages with another Kafka
// client (librdkafka's kcat, read_committed): every event with its key, payload and
// headers, each key in sequence order.
func TestKcatReadsWhatTheRelayProduced(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is not installed (Debian: apt-get install kcat); this test needs it to cross-check the relay's messages with librdkafka: %v", err)
	}
	db := openDB(t)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, "orders")
	want := addEvents(t, db, topic, 40, 4, 1, 4)
	relayAll(t, db, newPublisher(t, k))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-C", "-b", strings.Join(k.Brokers, ","), "-t", topic,
		"-o", "beginning", "-e", "-q", "-X", "isolation.level=read_committed",
		"-f", "%p\t%k\t%h\t%s\n").Output()
	require.NoError(t, err, "kcat: %s", out)

	byID := make(map[string]outbox.Event)
	for _, ev := range want {
		byID[ev.ID] = ev
	}
	seen := make(map[string]bool)
	last := make(map[string]int64)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, len(want))
	for _, line := range lines {
		f := strings.SplitN(line, "\t", 4)
		require.Len(t, f, 4, "kcat line %q", line)
		headers := make(map[string]string)
		for _, kv := range strings.Split(f[2], ",") {
			name, value, _ := strings.Cut(kv, "=")
			headers[name] = value
		}
		ev, ok := byID[headers["outbox-id"]]
		require.True(t, ok, "kcat line %q: unknown event", line)
		assert.False(t, seen[ev.ID], "event %s twice", ev.ID)
		seen[ev.ID] = true
		assert.Equal(t, ev.Key, f[1])
		assert.Equal(t, string(ev.Payload), f[3])
		assert.Equal(t, ev.Type, headers["outbox-type"])
		seq, err := strconv.ParseInt(headers["outbox-seq"], 10, 64)
		require.NoError(t, err)
		assert.Equal(t, ev.Seq, seq)
		assert.Equal(t, last[ev.Key]+1, seq, "key %s in order", ev.Key)
		last[ev.Key] = seq
	}
	assert.Len(t, seen, len(want))
}
