package outbox_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

// The tests of this file were first written by a session attacking the consumer's and
// DeadLetterTable's handling of hostile events, each failing before its fix.

// TestConsumerIDEndingWithASpaceIsDeadLettered: MySQL's collations ignore trailing spaces,
// so "x " was found among the processed events as "x" yet not matched: applied again, its
// record's insert refused (taken for another member's concurrent apply), at every
// delivery, holding the stream; sent before "x", it held "x" back the same way. It is
// dead-lettered at once, and "x" is applied exactly once.
func TestConsumerIDEndingWithASpaceIsDeadLettered(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		events := fakeEvents(3, 1)
		hostile := events[1]
		hostile.ID = events[0].ID + " "
		c, err := outbox.NewConsumer(db, "c", outboxtest.RecordingHandler("c"))
		require.NoError(t, err)
		require.NoError(t, c.Deliver(ctx, []outbox.Event{hostile}))
		require.NoError(t, c.Deliver(ctx, events))
		require.NoError(t, c.Deliver(ctx, []outbox.Event{hostile, events[2]}))
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "c"), events)
		dl := onlyDeadLetter(t, db)
		assert.Equal(t, fmt.Sprintf("ID %q ends with a space", hostile.ID), dl.Altered)
		assert.Zero(t, dl.Attempts)

		_, err = outbox.Add(ctx, db, outbox.Event{ID: "x ", Topic: "orders", Key: "k", Type: "t", Payload: []byte(`{}`)})
		require.ErrorIs(t, err, outbox.ErrInvalidEvent, "a relay never sends one")
	})
}

// TestDeadLetterTooLargeForOneStatement: bun sends a payload in hex, so a letter with a
// payload of 8 MiB, or of 5 MiB with 8 MiB of headers, made a statement larger than
// MariaDB's max_allowed_packet (16 MiB), refused at every delivery. On MySQL such a
// letter is stored without its headers, then without its payload, and says so; SQLite
// takes it whole.
func TestDeadLetterTooLargeForOneStatement(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		events := fakeEvents(3, 1)
		events[0].Payload = bytes.Repeat([]byte("a"), outbox.MaxPayloadLen)
		events[1].Payload = bytes.Repeat([]byte("b"), 5<<20)
		events[1].Headers = map[string]string{"h": strings.Repeat("v", outbox.MaxPayloadLen-100)}
		c, err := outbox.NewConsumer(db, "c", func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
			for _, ev := range evs {
				if ev.ID != events[2].ID {
					return outbox.Permanent(fmt.Errorf("bad event %s", ev.ID))
				}
			}
			return outboxtest.RecordingHandler("c")(ctx, tx, evs)
		})
		require.NoError(t, err)
		require.NoError(t, c.Deliver(ctx, events))
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "c"), events[2:])
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, "c", 0)
		require.NoError(t, err)
		require.Len(t, letters, 2)
		byID := map[string]outbox.DeadLetter{letters[0].ID: letters[0], letters[1].ID: letters[1]}
		huge, both := byID[events[0].ID], byID[events[1].ID]
		if sqlutil.IsSQLite(db) {
			assert.Empty(t, huge.Altered)
			assert.Equal(t, events[0].Payload, huge.Payload)
			assert.Empty(t, both.Altered)
			assert.Equal(t, events[1].Headers, both.Headers)
			return
		}
		assert.Equal(t, fmt.Sprintf("payload of %d bytes dropped", outbox.MaxPayloadLen), huge.Altered)
		assert.Empty(t, huge.Payload)
		assert.Equal(t, fmt.Sprintf("headers of %d bytes dropped", outbox.MaxPayloadLen-100+len(`{"h":""}`)), both.Altered)
		assert.Equal(t, events[1].Payload, both.Payload, "the payload fits once the headers are dropped")
		assert.Empty(t, both.Headers)

		// bun doubles each quote and backslash of the headers' text in the statement.
		table := outbox.NewDeadLetterTable(db)
		for _, v := range []string{strings.Repeat(`\`, 5<<20), strings.Repeat("'", 9<<20)} {
			ev := fakeEvents(1, 1)[0]
			ev.Headers = map[string]string{"h": v}
			require.NoError(t, table.DeadLetter(ctx, outbox.DeadLetter{Event: ev, Consumer: "c", Error: "e", Attempts: 1, At: time.Now()}))
		}
	})
}

// TestDeadLetterTableReplacesTheWholeLetter: a letter stored again under the same ID
// replaced only its error, attempts, time and altered flag: stored first with its key cut,
// then as it came, it said it was unaltered while holding the cut key, and Redrive handed
// the handler a key never sent; the other way round, a letter holding the event as sent
// said it was altered, and Redrive left it alone.
func TestDeadLetterTableReplacesTheWholeLetter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		ev := fakeEvents(1, 1)[0]
		long := ev
		long.Key = strings.Repeat("k", 200)
		table := outbox.NewDeadLetterTable(db)
		store := func(ev outbox.Event) outbox.DeadLetter {
			require.NoError(t, table.DeadLetter(ctx, outbox.DeadLetter{Event: ev, Consumer: "c", Error: "e", Attempts: 1, At: time.Now()}))
			return onlyDeadLetter(t, db)
		}
		dl := store(long)
		assert.Equal(t, strings.Repeat("k", outbox.MaxKeyLen), dl.Key)
		assert.NotEmpty(t, dl.Altered)
		dl = store(ev)
		assert.Equal(t, ev.Key, dl.Key)
		assert.Empty(t, dl.Altered)
		dl = store(long)
		assert.Equal(t, strings.Repeat("k", outbox.MaxKeyLen), dl.Key)
		assert.NotEmpty(t, dl.Altered)

		var keys []string
		c, err := outbox.NewConsumer(db, "c", func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
			for _, ev := range evs {
				keys = append(keys, ev.Key)
			}
			return nil
		})
		require.NoError(t, err)
		applied, err := c.Redrive(ctx, 0)
		require.NoError(t, err)
		assert.Zero(t, applied)
		assert.Empty(t, keys, "an altered letter is left alone")
		store(ev)
		applied, err = c.Redrive(ctx, 0)
		require.NoError(t, err)
		assert.Equal(t, 1, applied)
		assert.Equal(t, []string{ev.Key}, keys, "the event as it was sent")

		// An altered letter the operator resolved by hand is removed.
		dl = store(long)
		require.NoError(t, table.Remove(ctx, "c", dl.ID))
		require.NoError(t, table.Remove(ctx, "c", dl.ID), "a letter removed again: nothing to do")
		letters, err := table.List(ctx, "c", 0)
		require.NoError(t, err)
		assert.Empty(t, letters)
	})
}

// TestDeadLettersOfDistinctEventsWithoutIDs: the ID derived for an event without one
// covered neither its headers nor its creation time, so two foreign messages differing
// only there (a Kafka message carries no outbox type or sequence) shared one letter, and
// the second's headers and time were lost.
func TestDeadLettersOfDistinctEventsWithoutIDs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		events := fakeEvents(2, 1)
		events[0].ID, events[1].ID = "", ""
		events[1].Seq = events[0].Seq
		events[0].Headers = map[string]string{"trace": "1"}
		events[1].Headers = map[string]string{"trace": "2"}
		events[1].CreatedAt = events[0].CreatedAt.Add(time.Hour)
		c, err := outbox.NewConsumer(db, "c", outboxtest.RecordingHandler("c"))
		require.NoError(t, err)
		require.NoError(t, c.Deliver(ctx, events))
		require.NoError(t, c.Deliver(ctx, events), "delivered again: the same two letters")
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, "c", 0)
		require.NoError(t, err)
		require.Len(t, letters, 2, "two different events, two letters")
		assert.NotEqual(t, letters[0].Headers, letters[1].Headers)
	})
}
