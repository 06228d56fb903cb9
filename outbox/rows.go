package outbox

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// eventRow is a row of outbox_events.
type eventRow struct {
	bun.BaseModel `bun:"table:outbox_events"`

	Pos int64  `bun:"pos,pk,autoincrement"`
	ID  string `bun:"id"`
	eventColumns
	SentAt *time.Time `bun:"sent_at"`
	DeadAt *time.Time `bun:"dead_at"`
	Reason *string    `bun:"dead_reason"`
}

// eventColumns are the columns describing an event (but its ID), which outbox_events and
// outbox_dead_letters share.
type eventColumns struct {
	Topic     string    `bun:"topic"`
	Key       string    `bun:"aggregate_key"`
	Seq       int64     `bun:"seq"`
	Type      string    `bun:"event_type"`
	Payload   []byte    `bun:"payload"`
	Headers   *string   `bun:"headers"`
	CreatedAt time.Time `bun:"created_at"`
}

// event returns the event with ID id that c describes.
func (c *eventColumns) event(id string) (Event, error) {
	h, err := decodeHeaders(c.Headers)
	if err != nil {
		return Event{}, err
	}
	return Event{
		ID: id, Topic: c.Topic, Key: c.Key, Type: c.Type, Payload: c.Payload, Headers: h,
		CreatedAt: c.CreatedAt.UTC(), Seq: c.Seq,
	}, nil
}

func (r *eventRow) event() (Event, error) {
	ev, err := r.eventColumns.event(r.ID)
	if err != nil {
		return Event{}, fmt.Errorf("outbox: event %s: %w", r.ID, err)
	}
	return ev, nil
}

func (r *eventRow) stream() Stream { return Stream{Topic: r.Topic, Key: r.Key} }

// streamRow is a row of outbox_streams.
type streamRow struct {
	bun.BaseModel `bun:"table:outbox_streams"`

	Topic   string `bun:"topic,pk"`
	Key     string `bun:"aggregate_key,pk"`
	LastSeq int64  `bun:"last_seq"`
}

// processedRow is a row of outbox_processed.
type processedRow struct {
	bun.BaseModel `bun:"table:outbox_processed"`

	Consumer    string    `bun:"consumer,pk"`
	ID          string    `bun:"id,pk"`
	ProcessedAt time.Time `bun:"processed_at"`
}

// skipRow is a row of outbox_consumer_skips: consumer's dead letter ID, skipped.
type skipRow struct {
	bun.BaseModel `bun:"table:outbox_consumer_skips"`

	Consumer  string    `bun:"consumer,pk"`
	ID        string    `bun:"id,pk"`
	SkippedAt time.Time `bun:"skipped_at"`
}

// inflightRow is a row of outbox_inflight.
type inflightRow struct {
	bun.BaseModel `bun:"table:outbox_inflight"`

	Consumer string    `bun:"consumer,pk"`
	ID       string    `bun:"id,pk"`
	Token    string    `bun:"token,pk"` // the delivery's
	LeasedAt time.Time `bun:"leased_at"`
}

// deadLetterRow is a row of outbox_dead_letters.
type deadLetterRow struct {
	bun.BaseModel `bun:"table:outbox_dead_letters"`

	Consumer string `bun:"consumer,pk"`
	ID       string `bun:"id,pk"`
	eventColumns
	Error    string    `bun:"last_error"`
	Attempts int       `bun:"attempts"`
	DeadAt   time.Time `bun:"dead_at"`
	Altered  *string   `bun:"altered"`
}

func encodeHeaders(h map[string]string) (*string, error) {
	if len(h) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	s := string(b)
	return &s, nil
}

func decodeHeaders(s *string) (map[string]string, error) {
	if s == nil || *s == "" {
		return nil, nil
	}
	var h map[string]string
	if err := json.Unmarshal([]byte(*s), &h); err != nil {
		return nil, fmt.Errorf("decoding headers: %w", err)
	}
	return h, nil
}
