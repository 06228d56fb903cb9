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

	Pos       int64      `bun:"pos,pk,autoincrement"`
	ID        string     `bun:"id"`
	Topic     string     `bun:"topic"`
	Key       string     `bun:"aggregate_key"`
	Seq       int64      `bun:"seq"`
	Type      string     `bun:"event_type"`
	Payload   []byte     `bun:"payload"`
	Headers   *string    `bun:"headers"`
	CreatedAt time.Time  `bun:"created_at"`
	SentAt    *time.Time `bun:"sent_at"`
	DeadAt    *time.Time `bun:"dead_at"`
	Reason    *string    `bun:"dead_reason"`
}

func (r *eventRow) event() (Event, error) {
	h, err := decodeHeaders(r.Headers)
	if err != nil {
		return Event{}, fmt.Errorf("outbox: event %s: %w", r.ID, err)
	}
	return Event{
		ID: r.ID, Topic: r.Topic, Key: r.Key, Type: r.Type, Payload: r.Payload, Headers: h,
		CreatedAt: r.CreatedAt.UTC(), Seq: r.Seq,
	}, nil
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

// deadLetterRow is a row of outbox_dead_letters.
type deadLetterRow struct {
	bun.BaseModel `bun:"table:outbox_dead_letters"`

	Consumer  string    `bun:"consumer,pk"`
	ID        string    `bun:"id,pk"`
	Topic     string    `bun:"topic"`
	Key       string    `bun:"aggregate_key"`
	Seq       int64     `bun:"seq"`
	Type      string    `bun:"event_type"`
	Payload   []byte    `bun:"payload"`
	Headers   *string   `bun:"headers"`
	CreatedAt time.Time `bun:"created_at"`
	Error     string    `bun:"last_error"`
	Attempts  int       `bun:"attempts"`
	DeadAt    time.Time `bun:"dead_at"`
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
