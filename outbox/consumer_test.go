package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/outbox"
	"github.com/commercekit/commercekit/outbox/outboxtest"
)

// fakeEvents returns n events as a relay would deliver them, over keys keys.
func fakeEvents(n, keys int) []outbox.Event {
	out := make([]outbox.Event, n)
	for i := range out {
		out[i] = outbox.Event{
			ID: uuid.Must(uuid.NewV7()).String(), Topic: "orders", Key: fmt.Sprintf("key-%03d", i%keys),
			Type: "x", Payload: []byte(`{}`), Seq: int64(i/keys + 1), CreatedAt: time.Now().UTC(),
		}
	}
	return out
}

// onlyDeadLetter returns the one dead letter of consumer "c" on db, failing the test
// unless there is exactly one.
func onlyDeadLetter(t *testing.T, db *bun.DB) outbox.DeadLetter {
	t.Helper()
	letters, err := outbox.NewDeadLetterTable(db).List(context.Background(), "c", 0)
	require.NoError(t, err)
	require.Len(t, letters, 1)
	return letters[0]
}

// TestConsumerDedupsWithOneQueryPerBatch: per batch, one set-based SELECT against
// outbox_processed and one multi-row INSERT, whatever the batch size; a redelivery applies
// nothing and does not call the handler; repeats inside a batch are applied once.
func TestConsumerDedupsWithOneQueryPerBatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		qc := &queryCounter{}
		db = db.WithQueryHook(qc)
		calls := 0
		record := outboxtest.RecordingHandler("c")
		c, err := outbox.NewConsumer(db, "c", func(ctx context.Context, tx bun.Tx, events []outbox.Event) error {
			calls++
			return record(ctx, tx, events)
		})
		require.NoError(t, err)
		events := fakeEvents(250, 10)

		qc.reset("SELECT outbox_processed", "INSERT outbox_processed")
		require.NoError(t, c.Deliver(ctx, events))
		assert.Equal(t, 3, qc.get("SELECT outbox_processed"), "batches of 100, 100 and 50")
		assert.Equal(t, 3, qc.get("INSERT outbox_processed"))
		assert.Equal(t, 3, calls)

		qc.reset("SELECT outbox_processed", "INSERT outbox_processed")
		require.NoError(t, c.Deliver(ctx, events), "a redelivery of everything")
		assert.Equal(t, 3, qc.get("SELECT outbox_processed"))
		assert.Zero(t, qc.get("INSERT outbox_processed"))
		assert.Equal(t, 3, calls, "the handler never sees a duplicate")

		more := fakeEvents(3, 3)
		for i := range more {
			more[i].Key = "more-" + more[i].Key
		}
		n, err := c.Apply(ctx, []outbox.Event{more[0], more[1], more[0], events[0], more[2], more[1]})
		require.NoError(t, err)
		assert.Equal(t, 3, n, "repeats within a batch and an old event are dropped")
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "c"), append(events, more...))

		other, err := outbox.NewConsumer(db, "other", outboxtest.RecordingHandler("other"))
		require.NoError(t, err)
		n, err = other.Apply(ctx, events[:5])
		require.NoError(t, err)
		assert.Equal(t, 5, n, "each consumer name has its own record")
	})
}

// TestConsumerDeadLettersAPoisonEventAndTheRestFlowOn: one event that always fails is
// isolated from its batch, retried MaxAttempts times, dead-lettered with its error and
// attempt count (also in the listing without payloads, Summaries); every other event is
// applied once. Redrive applies it once it is fixed.
func TestConsumerDeadLettersAPoisonEventAndTheRestFlowOn(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		events := fakeEvents(10, 2)
		poison := events[3].ID
		var fixed atomic.Bool
		record := outboxtest.RecordingHandler("c")
		m := newMetrics()
		c, err := outbox.NewConsumer(db, "c", func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
			for _, ev := range evs {
				if ev.ID == poison && !fixed.Load() {
					return errors.New("cannot apply: unknown product")
				}
			}
			return record(ctx, tx, evs)
		}, outbox.WithMaxAttempts(3), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond), outbox.WithObserver(m))
		require.NoError(t, err)

		require.NoError(t, c.Deliver(ctx, events))
		assert.Len(t, outboxtest.Applied(t, db, "c"), 9)
		for _, r := range outboxtest.Applied(t, db, "c") {
			assert.NotEqual(t, poison, r.EventID)
		}
		dl := onlyDeadLetter(t, db)
		assert.Equal(t, poison, dl.ID)
		assert.Equal(t, 3, dl.Attempts)
		assert.Contains(t, dl.Error, "unknown product")
		assert.Equal(t, events[3].Payload, dl.Payload)
		summaries, err := outbox.NewDeadLetterTable(db).Summaries(ctx, "c", 0)
		require.NoError(t, err)
		dl.Payload, dl.Headers = nil, nil
		assert.Equal(t, []outbox.DeadLetter{dl}, summaries, "the letter without its payload and headers")
		assert.Equal(t, 1, m.get("dead_lettered", "c/orders"))
		assert.Equal(t, 4, m.get("handler_failed", "c/orders"), "the batch attempt and three attempts alone")

		n, err := c.Redrive(ctx, 0)
		require.NoError(t, err)
		assert.Zero(t, n, "still failing: dead-lettered again")
		assert.Equal(t, poison, onlyDeadLetter(t, db).ID, "replaced, not duplicated")

		fixed.Store(true)
		n, err = c.Redrive(ctx, 0)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, "c", 0)
		require.NoError(t, err)
		assert.Empty(t, letters)
		require.NoError(t, c.Deliver(ctx, events), "a late duplicate of the whole batch")
		rows := outboxtest.Applied(t, db, "c")
		assert.Len(t, rows, 10)
		seen := map[string]int{}
		for _, r := range rows {
			seen[r.EventID]++
		}
		for _, ev := range events {
			assert.Equal(t, 1, seen[ev.ID])
		}
	})
}

func TestConsumerPermanentErrorIsDeadLetteredAtOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		events := fakeEvents(3, 1)
		record := outboxtest.RecordingHandler("c")
		tries := 0
		c, err := outbox.NewConsumer(db, "c", func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
			if len(evs) == 1 && evs[0].ID == events[1].ID {
				tries++
				return outbox.Permanent(errors.New("payload does not decode"))
			}
			if len(evs) > 1 {
				return errors.New("batch contains a bad event")
			}
			return record(ctx, tx, evs)
		}, outbox.WithBackoff(0, 0))
		require.NoError(t, err)
		require.NoError(t, c.Deliver(ctx, events))
		assert.Equal(t, 1, tries)
		assert.Equal(t, 1, onlyDeadLetter(t, db).Attempts)
		assert.Len(t, outboxtest.Applied(t, db, "c"), 2)
	})
}

// TestConsumerEventWithoutIDIsDeadLettered: an event that cannot be deduplicated goes to the
// dead letters at once (under a fresh ID in the table), the rest is applied.
func TestConsumerEventWithoutIDIsDeadLettered(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		events := fakeEvents(3, 1)
		events[1].ID = ""
		c, err := outbox.NewConsumer(db, "c", outboxtest.RecordingHandler("c"))
		require.NoError(t, err)
		require.NoError(t, c.Deliver(ctx, events))
		assert.Len(t, outboxtest.Applied(t, db, "c"), 2)
		dl := onlyDeadLetter(t, db)
		assert.Zero(t, dl.Attempts)
		assert.Contains(t, dl.Error, "ID is missing")
	})
}

// TestConsumerInfrastructureErrorIsNotDeadLettered: when the consumer's own statements fail
// (here: its processed-events table is gone), Deliver returns the error, applies nothing and
// dead-letters nothing; the batch is delivered again later.
func TestConsumerInfrastructureErrorIsNotDeadLettered(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		events := fakeEvents(5, 1)
		c, err := outbox.NewConsumer(db, "c", outboxtest.RecordingHandler("c"), outbox.WithBackoff(0, 0))
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, "DROP TABLE outbox_processed")
		require.NoError(t, err)
		require.Error(t, c.Deliver(ctx, events))
		assert.Empty(t, outboxtest.Applied(t, db, "c"))
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, "c", 0)
		require.NoError(t, err)
		assert.Empty(t, letters)

		require.NoError(t, outbox.CreateSchema(ctx, db))
		require.NoError(t, c.Deliver(ctx, events))
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "c"), events)
	})
}

// TestConsumerReturnsContextErrors: a cancelled delivery returns the context's error as it
// is and dead-letters nothing.
func TestConsumerReturnsContextErrors(t *testing.T) {
	db := outboxtest.Prepare(t, testenv.SQLite(t))
	ctx, cancel := context.WithCancel(context.Background())
	c, err := outbox.NewConsumer(db, "c", func(context.Context, bun.Tx, []outbox.Event) error {
		cancel()
		return errors.New("interrupted")
	})
	require.NoError(t, err)
	err = c.Deliver(ctx, fakeEvents(2, 1))
	require.ErrorIs(t, err, context.Canceled)
	letters, err := outbox.NewDeadLetterTable(db).List(context.Background(), "c", 0)
	require.NoError(t, err)
	assert.Empty(t, letters)
}

// TestDispatcherConformance: the in-process publisher of the embedded mode keeps the
// outbox.Publisher promise (its consumers see each event once: duplicates stop at their
// processed-events table).
func TestDispatcherConformance(t *testing.T) {
	outboxtest.RunPublisher(t, func(t *testing.T) (outbox.Publisher, string, outboxtest.Received) {
		const topic = "conformance"
		var (
			mu  sync.Mutex
			got []outbox.Event
		)
		c, err := outbox.NewConsumer(outboxtest.Prepare(t, testenv.SQLite(t)), "conformance", func(_ context.Context, _ bun.Tx, events []outbox.Event) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, events...)
			return nil
		})
		require.NoError(t, err)
		d, err := outbox.NewDispatcher(outbox.Subscription{Topic: topic, Consumer: c})
		require.NoError(t, err)
		return d, topic, func(t *testing.T, n int) []outbox.Event {
			mu.Lock()
			defer mu.Unlock()
			// Dispatcher.Publish returns after its consumers applied the batch.
			require.GreaterOrEqual(t, len(got), n)
			return append([]outbox.Event(nil), got...)
		}
	})
}

// TestConsumerPanickingHandlerIsDeadLettered: a poison event that makes the handler panic
// (a nil dereference on a field it lacks, say) does not take the process down at every
// delivery: the panic is the handler's failure, its writes are rolled back, the event is
// retried and dead-lettered with the panic's value and stack, and the events around it are
// applied once. A handler that panicked rather than failed took down the relay or the
// Kafka consumer, and with it the process, at every delivery of the batch.
func TestConsumerPanickingHandlerIsDeadLettered(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		events := fakeEvents(10, 2)
		poison := events[3].ID
		record := outboxtest.RecordingHandler("c")
		m := newMetrics()
		c, err := outbox.NewConsumer(db, "c", func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
			if err := record(ctx, tx, evs); err != nil { // written first: the panic must undo it
				return err
			}
			for _, ev := range evs {
				if ev.ID == poison {
					var product *struct{ Price int } // the poison event has no product
					return fmt.Errorf("price %d", product.Price)
				}
			}
			return nil
		}, outbox.WithMaxAttempts(3), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond), outbox.WithObserver(m))
		require.NoError(t, err)

		require.NoError(t, c.Deliver(ctx, events))
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "c"), slices.DeleteFunc(slices.Clone(events),
			func(ev outbox.Event) bool { return ev.ID == poison }))
		dl := onlyDeadLetter(t, db)
		assert.Equal(t, poison, dl.ID)
		assert.Equal(t, 3, dl.Attempts)
		assert.Contains(t, dl.Error, "handler panicked")
		assert.Contains(t, dl.Error, "nil pointer dereference")
		assert.Contains(t, dl.Error, "TestConsumerPanickingHandlerIsDeadLettered", "the stack")
		assert.Equal(t, 1, m.get("dead_lettered", "c/orders"))
		assert.Equal(t, 4, m.get("handler_failed", "c/orders"), "the batch attempt and three attempts alone")
	})
}

// TestConsumerHugeFailureIsDeadLettered: a handler that panics with a value of its own
// making, as large as an event's payload (panic(fmt.Sprintf("bad order %s", payload))), or
// that fails with such an error, has its event dead-lettered like any other, and the
// events around it applied: the dead letter's text must fit its column (TEXT on MySQL:
// 64 KiB). Stored as it came, the letter was refused by MySQL ("Data too long") and
// Deliver failed with ErrDeadLetter at every delivery of the batch, holding up every event
// after it for ever.
func TestConsumerHugeFailureIsDeadLettered(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		events := fakeEvents(8, 2)
		huge, failed := events[1].ID, events[5].ID
		c, err := outbox.NewConsumer(db, "c", func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
			for _, ev := range evs {
				switch ev.ID {
				case huge:
					panic(fmt.Sprintf("bad order %s: %s", ev.ID, strings.Repeat("x", 100<<10)))
				case failed:
					return fmt.Errorf("bad order %s: %s", ev.ID, strings.Repeat("é", 100<<10))
				}
			}
			return outboxtest.RecordingHandler("c")(ctx, tx, evs)
		}, outbox.WithMaxAttempts(2), outbox.WithBackoff(time.Millisecond, 2*time.Millisecond))
		require.NoError(t, err)

		require.NoError(t, c.Deliver(ctx, events))
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "c"), slices.DeleteFunc(slices.Clone(events),
			func(ev outbox.Event) bool { return ev.ID == huge || ev.ID == failed }))
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, "c", 0)
		require.NoError(t, err)
		require.Len(t, letters, 2)
		for _, dl := range letters {
			if dl.ID != failed {
				assert.Contains(t, dl.Error, "handler panicked")
			}
			assert.Contains(t, dl.Error, "bad order "+dl.ID)
			assert.True(t, utf8.ValidString(dl.Error), "%q", dl.Error)
			assert.LessOrEqual(t, len(dl.Error), 64<<10)
			assert.Equal(t, 2, dl.Attempts)
		}
	})
}

// TestConsumerHostileEventsAreDeadLetteredAndTheRestFlowOn: a Kafka producer other than the
// relay can send anything. An event ID holding a control character (a NUL byte, which
// SQLite refuses in a statement and MySQL does not store as given) is dead-lettered at
// once, unhandled, under a fresh ID, like a missing one; an event whose key, type,
// headers or handler error hold NUL bytes, invalid UTF-8 or more than their columns take
// is dead-lettered when its handler fails, stored in a form the table takes. Delivered
// again, each leaves no second letter. Before, the
// statement reading the processed events (or storing the dead letter) failed at every
// delivery, holding up the events after it for ever.
func TestConsumerHostileEventsAreDeadLetteredAndTheRestFlowOn(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		events := fakeEvents(6, 2)
		nulID, tabID, hostile := "nul\x00id", "tab\tid", events[3].ID
		events[1].ID, events[2].ID = nulID, tabID
		events[3].Key = "k\x00" + strings.Repeat("é", 200) + "\xff"
		events[3].Type = "t\x00" + strings.Repeat("x", 300)
		events[3].Headers = map[string]string{"h\x00": strings.Repeat("v\x00\xff", 40<<10)}
		events[3].Payload = []byte("\x00\xff not JSON")
		events[3].CreatedAt = time.UnixMilli(math.MaxInt64) // a producer's own timestamp
		calls := make(map[string]int)
		c, err := outbox.NewConsumer(db, "c", func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
			for _, ev := range evs {
				calls[ev.ID]++
				if ev.ID == hostile {
					return outbox.Permanent(fmt.Errorf("bad order %q\x00%s", ev.Key, ev.Payload))
				}
			}
			return outboxtest.RecordingHandler("c")(ctx, tx, evs)
		})
		require.NoError(t, err)

		require.NoError(t, c.Deliver(ctx, events))
		require.NoError(t, c.Deliver(ctx, events), "delivered again: nothing more happens")
		requireExactlyOnceInOrder(t, outboxtest.Applied(t, db, "c"), []outbox.Event{events[0], events[4], events[5]})
		assert.Zero(t, calls[nulID]+calls[tabID], "an event with a control character in its ID is never handled")
		letters, err := outbox.NewDeadLetterTable(db).List(ctx, "c", 0)
		require.NoError(t, err)
		require.Len(t, letters, 3, "one letter per event, however often it is delivered")
		var stored outbox.DeadLetter
		replaced := 0
		for _, dl := range letters {
			if dl.ID == hostile {
				stored = dl
				continue
			}
			replaced++
			_, err := uuid.Parse(dl.ID)
			require.NoError(t, err, "stored under an ID derived from the event, not %q", dl.ID)
			assert.Zero(t, dl.Attempts)
			assert.Contains(t, dl.Error, "contains a control character")
			assert.Regexp(t, `^ID "(nul\\x00id|tab\\tid)" contains a control character$`, dl.Altered)
		}
		assert.Equal(t, 2, replaced)
		assert.Equal(t, 1, stored.Attempts)
		assert.Equal(t, events[3].Payload, stored.Payload, "the payload is kept byte for byte")
		assert.Contains(t, stored.Error, "bad order")
		for _, s := range []string{stored.Error, stored.Key, stored.Type} {
			assert.True(t, utf8.ValidString(s) && !strings.ContainsRune(s, 0), "%q", s)
		}
		assert.LessOrEqual(t, utf8.RuneCountInString(stored.Key), outbox.MaxKeyLen)
		assert.LessOrEqual(t, utf8.RuneCountInString(stored.Type), outbox.MaxTypeLen)
		assert.Equal(t, `key was "k\x00`+strings.Repeat("é", 31)+`"... (403 bytes); type was "t\x00`+strings.Repeat("x", 62)+
			`"... (302 bytes); created at 292278994-08-17T07:12:55.807Z, past what a column takes; headers held invalid UTF-8, replaced by U+FFFD`, stored.Altered)
		require.Len(t, stored.Headers, 1)

		handled := calls[hostile]
		applied, err := c.Redrive(ctx, 1)
		require.NoError(t, err)
		assert.Zero(t, applied, "a letter stored altered is not the event that was sent: Redrive leaves it alone")
		after, err := outbox.NewDeadLetterTable(db).List(ctx, "c", 0)
		require.NoError(t, err)
		assert.Equal(t, letters, after)
		assert.Zero(t, calls[nulID]+calls[tabID])
		assert.Equal(t, handled, calls[hostile])
	})
}

// TestConsumerNamesCompareByteForByte: consumers whose names differ keep their own
// processed records on every backend, so each applies every event. MySQL's binary
// collations ignore trailing spaces (PAD SPACE), so a consumer named "c " would find c's
// records there and skip every event c applied, while on SQLite it applies them: such a
// name is refused. A leading space or another case makes another consumer everywhere.
func TestConsumerNamesCompareByteForByte(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		_, err := outbox.NewConsumer(db, "c ", outboxtest.RecordingHandler("c "))
		require.ErrorIs(t, err, outbox.ErrInvalidConfig, "a name ending with a space")

		events := fakeEvents(1, 1)
		for _, name := range []string{"c", " c", "C"} {
			handled := 0
			c, err := outbox.NewConsumer(db, name, func(ctx context.Context, tx bun.Tx, evs []outbox.Event) error {
				handled += len(evs)
				return nil
			})
			require.NoError(t, err)
			require.NoError(t, c.Deliver(ctx, events))
			assert.Equal(t, 1, handled, "consumer %q applies the event", name)
		}
	})
}

// TestRemoveTakesOnlyTheLetterNamed: DeadLetterTable.Remove compares the ID byte for byte
// on every backend. MySQL's collations ignore trailing spaces, so Remove of id+" " deleted
// the letter id there (the record of an event not yet resolved, lost to a stray space),
// while on SQLite it removed nothing. No letter is stored under such an ID.
func TestRemoveTakesOnlyTheLetterNamed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		ev := fakeEvents(1, 1)[0]
		table := outbox.NewDeadLetterTable(db)
		require.NoError(t, table.DeadLetter(ctx, outbox.DeadLetter{Event: ev, Consumer: "c", Error: "unknown product", Attempts: 1, At: ev.CreatedAt}))

		require.NoError(t, table.Remove(ctx, "c", ev.ID+" "))
		require.NoError(t, table.Remove(ctx, "c ", ev.ID))
		assert.Equal(t, ev.ID, onlyDeadLetter(t, db).ID, "still there")

		require.NoError(t, table.Remove(ctx, "c", ev.ID))
		letters, err := table.List(ctx, "c", 0)
		require.NoError(t, err)
		assert.Empty(t, letters)
	})
}
