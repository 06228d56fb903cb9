package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// DeadLetter is an event a consumer gave up on, or one the relay set aside because the
// publisher can never take it (Relay.DeadLetters), with why.
type DeadLetter struct {
	Event
	// Consumer is the name of the consumer that gave up; empty for the relay's.
	Consumer string
	// Error is the last error, as text.
	Error string
	// Attempts is how many times the event was tried on its own (0: it was never tried,
	// e.g. it had no valid ID).
	Attempts int
	// At is when the consumer gave up.
	At time.Time
}

// DeadLetterSink stores dead letters. DeadLetter must be durable when it returns nil: the
// consumer moves on past the event then.
type DeadLetterSink interface {
	DeadLetter(ctx context.Context, dl DeadLetter) error
}

// DeadLetterTable keeps dead letters in the outbox_dead_letters table, one row per consumer
// and event ID. It is the default sink of a Consumer, and what Consumer.Redrive reads.
type DeadLetterTable struct{ db *bun.DB }

// NewDeadLetterTable returns a DeadLetterTable on db.
func NewDeadLetterTable(db *bun.DB) *DeadLetterTable { return &DeadLetterTable{db: db} }

// DeadLetter stores dl, replacing the error, attempt count and time of an earlier dead
// letter of the same consumer and event (one that was re-driven and failed again). A
// letter whose ID cannot key a row (missing or too long) is stored under a fresh UUID.
func (t *DeadLetterTable) DeadLetter(ctx context.Context, dl DeadLetter) error {
	if checkDeliveredID(dl.ID) != "" {
		dl.Error = fmt.Sprintf("event ID %q replaced: %s", dl.ID, dl.Error)
		dl.ID = uuid.NewString()
	}
	h, err := encodeHeaders(dl.Headers)
	if err != nil {
		return err
	}
	row := deadLetterRow{
		Consumer: dl.Consumer, ID: dl.ID,
		eventColumns: eventColumns{Topic: dl.Topic, Key: dl.Key, Seq: dl.Seq, Type: dl.Type,
			Payload: dl.Payload, Headers: h, CreatedAt: dl.CreatedAt.UTC()},
		Error: dl.Error, Attempts: dl.Attempts, DeadAt: dl.At.UTC(),
	}
	if row.Payload == nil {
		row.Payload = []byte{}
	}
	// The new values as parameters rather than VALUES(), which MySQL 8 deprecates (and
	// whose replacement, the alias form, MariaDB does not run).
	conflict := "DUPLICATE KEY UPDATE"
	if sqlutil.IsSQLite(t.db) {
		conflict = "CONFLICT (consumer, id) DO UPDATE"
	}
	q := t.db.NewInsert().Model(&row).On(conflict).
		Set("last_error = ?, attempts = ?, dead_at = ?", row.Error, row.Attempts, row.DeadAt)
	if _, err := q.Exec(ctx); err != nil {
		return fmt.Errorf("outbox: storing dead letter %s of %s: %w", dl.ID, dl.Consumer, err)
	}
	return nil
}

// List returns up to limit (0: all) dead letters of consumer, oldest first.
func (t *DeadLetterTable) List(ctx context.Context, consumer string, limit int) ([]DeadLetter, error) {
	var rows []deadLetterRow
	q := t.db.NewSelect().Model(&rows).Where("consumer = ?", consumer).OrderExpr("dead_at, id")
	if limit > 0 {
		q = q.Limit(int64(limit))
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("outbox: listing dead letters of %s: %w", consumer, err)
	}
	out := make([]DeadLetter, len(rows))
	for i, r := range rows {
		ev, err := r.event(r.ID)
		if err != nil {
			return nil, fmt.Errorf("outbox: dead letter %s: %w", r.ID, err)
		}
		out[i] = DeadLetter{
			Event:    ev,
			Consumer: r.Consumer, Error: r.Error, Attempts: r.Attempts, At: r.DeadAt.UTC(),
		}
	}
	return out, nil
}

func (t *DeadLetterTable) remove(ctx context.Context, consumer, id string) error {
	_, err := t.db.NewDelete().Model((*deadLetterRow)(nil)).Where("consumer = ? AND id = ?", consumer, id).Exec(ctx)
	if err != nil {
		return fmt.Errorf("outbox: removing dead letter %s of %s: %w", id, consumer, err)
	}
	return nil
}

// Redrive delivers the consumer's dead letters from its DeadLetterTable again, oldest first,
// up to limit (0: all), once the cause is fixed. A letter that is applied now (or was
// applied meanwhile) leaves the table; one that fails again is retried and dead-lettered
// anew, replacing its row. The letter leaves the table only after it is applied, so a crash
// midway loses nothing. It returns how many letters were applied, and fails with
// ErrInvalidConfig when the consumer's dead letters go elsewhere (for a Kafka dead-letter
// topic, see saramaoutbox.Redrive).
func (c *Consumer) Redrive(ctx context.Context, limit int) (int, error) {
	table, ok := c.s.deadLetters.(*DeadLetterTable)
	if !ok {
		return 0, invalidConfig("consumer %s keeps its dead letters elsewhere than a DeadLetterTable", c.name)
	}
	letters, err := table.List(ctx, c.name, limit)
	if err != nil {
		return 0, err
	}
	applied := 0
	for _, dl := range letters {
		// The cause is fixed: the crashes it was dead-lettered for are no longer counted.
		if err := c.forget(ctx, dl.Event); err != nil {
			return applied, err
		}
		dead, err := c.deliverOne(ctx, dl.Event, true, nil)
		if err != nil {
			return applied, err
		}
		if dead {
			continue
		}
		if err := table.remove(ctx, c.name, dl.ID); err != nil {
			return applied, err
		}
		applied++
	}
	return applied, nil
}
