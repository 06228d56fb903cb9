package outbox

import (
	"encoding/json"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits on the fields of an Event, checked by Add. They match the column sizes of
// CreateSchema and Kafka's own limit on topic names.
const (
	MaxIDLen      = 64
	MaxTopicLen   = 249
	MaxKeyLen     = 128
	MaxTypeLen    = 128
	MaxPayloadLen = 8 << 20 // 8 MiB, whatever WithMaxEventBytes allows

	// DefaultMaxEventBytes is the default limit on an event's Size that Add enforces
	// (WithMaxEventBytes). It leaves room, under a default Kafka broker's limit of 1 MiB per
	// record batch (message.max.bytes = 1048588), for the headers and framing the relay
	// adds; saramaoutbox.ProducerConfig sets sarama's Producer.MaxMessageBytes to match.
	DefaultMaxEventBytes = 1_000_000
)

// ReservedHeaderPrefix starts the header names the library itself writes (event ID, type,
// sequence, dead-letter details); an event may not carry headers of its own with it.
const ReservedHeaderPrefix = "outbox-"

// Event is one message of the outbox.
//
// The caller fills Topic, Key, Type, Payload and optionally Headers (and ID, to make an Add
// idempotent on its own ID). Add fills ID (a UUIDv7 when empty), CreatedAt (the writer's
// clock when zero) and Seq.
type Event struct {
	// ID identifies the event everywhere: in the outbox, in the Kafka headers and in every
	// consumer's processed-events table. Time-ordered (UUIDv7) unless the caller supplies one.
	ID string
	// Topic is the Kafka topic (or the in-process subscription) the event goes to.
	Topic string
	// Key is the aggregate's ID. It is the Kafka message key, so one aggregate's events land
	// on one partition in order. At most 128 characters, without control characters, not
	// ending with a space (which MySQL would ignore, taking "k " for "k").
	Key string
	// Type names the kind of event, e.g. "payment.completed".
	Type string
	// Payload is the event's body, a JSON document.
	Payload []byte
	// Headers are extra string headers passed along with the event.
	Headers map[string]string
	// CreatedAt is when the event was added (UTC, microsecond precision).
	CreatedAt time.Time
	// Seq is the event's position in its stream (Topic, Key): 1, 2, 3, ... with no gap among
	// committed events, so a consumer can tell when one is missing.
	Seq int64
}

// Size is the event's size as a Kafka record counts it, apart from the headers the relay
// adds (ID, type, sequence, creation time: a Publisher accounts for those): its key and
// payload, and for each of its headers the name, the value and 10 bytes of length
// prefixes. Add rejects an event whose Size is above the writer's limit
// (WithMaxEventBytes).
func (e Event) Size() int {
	n := len(e.Key) + len(e.Payload)
	for name, value := range e.Headers {
		n += len(name) + len(value) + 10
	}
	return n
}

// Stream names the sequence an event belongs to: its topic and key.
type Stream struct {
	Topic string
	Key   string
}

// Stream returns the stream of the event.
func (e Event) Stream() Stream { return Stream{Topic: e.Topic, Key: e.Key} }

// validate checks the fields a caller fills. idRequired is false for Add, which generates
// missing IDs.
func (e *Event) validate(index int, idRequired bool) error {
	bad := func(field, reason string) error {
		return &EventError{Index: index, ID: e.ID, Field: field, Reason: reason, Err: ErrInvalidEvent}
	}
	switch {
	case e.ID == "" && idRequired:
		return bad("ID", "is empty")
	case len(e.ID) > MaxIDLen:
		return bad("ID", "is longer than 64 bytes")
	case !utf8.ValidString(e.ID):
		return bad("ID", "is not valid UTF-8")
	case hasControl(e.ID):
		return bad("ID", "contains a control character")
	case strings.HasSuffix(e.ID, " "):
		return bad("ID", "ends with a space")
	}
	if reason := checkTopic(e.Topic); reason != "" {
		return bad("Topic", reason)
	}
	switch {
	case e.Key == "":
		return bad("Key", "is empty (it is the aggregate ID)")
	case utf8.RuneCountInString(e.Key) > MaxKeyLen || !utf8.ValidString(e.Key):
		return bad("Key", "is longer than 128 characters or not valid UTF-8")
	case hasControl(e.Key):
		return bad("Key", "contains a control character")
	case strings.HasSuffix(e.Key, " "):
		// MySQL's collations ignore trailing spaces: the stream of "k " would number its
		// events from the counter of "k".
		return bad("Key", "ends with a space")
	}
	switch {
	case e.Type == "":
		return bad("Type", "is empty")
	case utf8.RuneCountInString(e.Type) > MaxTypeLen || !utf8.ValidString(e.Type):
		return bad("Type", "is longer than 128 characters or not valid UTF-8")
	case hasControl(e.Type):
		return bad("Type", "contains a control character")
	}
	switch {
	case len(e.Payload) > MaxPayloadLen:
		return bad("Payload", "is larger than 8 MiB")
	case !json.Valid(e.Payload):
		return bad("Payload", "is not a JSON document")
	}
	for name := range e.Headers {
		switch {
		case name == "":
			return bad("Headers", "has an empty name")
		case strings.HasPrefix(name, ReservedHeaderPrefix):
			return bad("Headers", "has "+name+": names starting with "+ReservedHeaderPrefix+" are reserved")
		}
	}
	return nil
}

// LegalTopic reports whether topic is a legal Kafka topic name, as Add requires.
func LegalTopic(topic string) bool { return checkTopic(topic) == "" }

// checkTopic returns why topic is not a legal Kafka topic name, or "".
func checkTopic(topic string) string {
	switch {
	case topic == "":
		return "is empty"
	case len(topic) > MaxTopicLen:
		return "is longer than 249 characters"
	case topic == "." || topic == "..":
		return "may not be . or .."
	}
	for _, r := range topic {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return "may hold only ASCII letters, digits, '.', '_' and '-'"
		}
	}
	return ""
}

// hasControl reports whether s holds a control character: none belongs in an ID, a key or
// a type, and a NUL is not stored as given.
func hasControl(s string) bool { return strings.ContainsFunc(s, unicode.IsControl) }
