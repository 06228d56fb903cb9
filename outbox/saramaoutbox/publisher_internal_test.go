package saramaoutbox

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/outbox"
)

// TestProducingFailedNamesEveryMessage: when a transaction is aborted because the broker
// refused messages, every message of the batch is reported as not accepted (the abort took
// them all); those refused for a reason no retry fixes carry an outbox.Permanent cause,
// the others a plain one, so the relay sets aside only the former (after trying each alone).
func TestProducingFailedNamesEveryMessage(t *testing.T) {
	var msgs []*sarama.ProducerMessage
	for _, id := range []string{"big", "small", "other"} {
		msgs = append(msgs, Message(outbox.Event{ID: id, Topic: "t", Key: id, Type: "x", Payload: []byte("{}")}))
	}
	err := producingFailed(msgs, sarama.ProducerErrors{
		{Msg: msgs[0], Err: sarama.ErrMessageSizeTooLarge},
		{Msg: msgs[1], Err: sarama.ErrNotLeaderForPartition},
	})
	var pe *outbox.PublishError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, outbox.ErrPublish)
	require.Len(t, pe.Failed, 3)
	var perm *outbox.PermanentError
	assert.ErrorAs(t, pe.Failed["big"], &perm)
	assert.ErrorIs(t, pe.Failed["big"], sarama.ErrMessageSizeTooLarge)
	for _, id := range []string{"small", "other"} {
		assert.False(t, errors.As(pe.Failed[id], &perm), "%s may be retried", id)
	}

	err = producingFailed(msgs, errors.New("broker gone"))
	require.ErrorIs(t, err, outbox.ErrPublish)
	assert.False(t, errors.As(err, &pe), "no per-message detail: the whole batch failed")
}

// TestMaxEventBytesMatchesTheProducer: the writer's default limit is what the default
// producer takes, and an event of the largest size the limit allows, with the relay's
// headers at their widest, fits Producer.MaxMessageBytes as sarama counts it.
func TestMaxEventBytesMatchesTheProducer(t *testing.T) {
	cfg := ProducerConfig()
	require.Equal(t, outbox.DefaultMaxEventBytes, MaxEventBytes(cfg))
	assert.Less(t, cfg.Producer.MaxMessageBytes+61, 1048588, "under a default broker's message.max.bytes with the batch header")
	ev := outbox.Event{
		ID: strings.Repeat("i", outbox.MaxIDLen), Topic: "t", Key: "order-1", Type: strings.Repeat("😀", outbox.MaxTypeLen), // 4 bytes each
		Headers: map[string]string{"trace": "abc"}, Seq: math.MaxInt64, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC),
	}
	ev.Payload = []byte(`"` + strings.Repeat("x", MaxEventBytes(cfg)-ev.Size()-2) + `"`)
	require.Equal(t, MaxEventBytes(cfg), ev.Size())
	assert.LessOrEqual(t, Message(ev).ByteSize(2), cfg.Producer.MaxMessageBytes)
}
