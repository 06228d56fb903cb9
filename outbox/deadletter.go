package outbox

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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
	// Altered, set by DeadLetterTable, says what it changed in an event it could not store
	// as it came (a hostile or foreign producer's): an ID that cannot key a row, replaced
	// by one derived from the event; a NUL byte or invalid UTF-8 in the topic, key or type,
	// replaced by U+FFFD, or more characters than their columns take, cut; a creation time
	// past year 9999, zeroed; on MySQL, headers, then a payload, too large for one
	// statement, dropped. Empty: stored as it came. Redrive leaves such a letter alone:
	// the event it holds is not the one that was sent.
	Altered string
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

// DeadLetter stores dl, replacing whole an earlier dead letter of the same consumer and
// event (one that was re-driven and failed again, or delivered again). An event it cannot
// store as it came is stored altered, and DeadLetter.Altered says how (see there): a
// letter whose ID cannot key a row (missing, too long, not UTF-8, holding a control
// character, ending with a space) is stored under a UUID derived from the whole event, so
// the same event delivered again replaces its letter rather than adding one.
func (t *DeadLetterTable) DeadLetter(ctx context.Context, dl DeadLetter) error {
	maxBytes := maxLetterBytes
	if sqlutil.IsSQLite(t.db) {
		maxBytes = math.MaxInt // no packet to fit in
	}
	dl, h, err := storable(dl, maxBytes)
	if err != nil {
		return err
	}
	row := deadLetterRow{
		Consumer: dl.Consumer, ID: dl.ID,
		eventColumns: eventColumns{Topic: dl.Topic, Key: dl.Key, Seq: dl.Seq, Type: dl.Type,
			Payload: dl.Payload, Headers: h, CreatedAt: dl.CreatedAt.UTC()},
		Error: dl.Error, Attempts: dl.Attempts, DeadAt: dl.At.UTC(),
	}
	if dl.Altered != "" {
		row.Altered = &dl.Altered
	}
	if row.Payload == nil {
		row.Payload = []byte{}
	}
	// A delete and an insert in one transaction: an upsert setting every column would
	// send the payload twice (bun inlines it; VALUES(), which would not, MySQL 8
	// deprecates, and MariaDB does not run its replacement).
	err = sqlutil.InTx(ctx, t.db, func(ctx context.Context, tx bun.Tx) error {
		if err := removeLetter(ctx, tx, dl.Consumer, dl.ID); err != nil {
			return err
		}
		_, err := tx.NewInsert().Model(&row).Exec(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("outbox: storing dead letter %s of %s: %w", dl.ID, dl.Consumer, err)
	}
	return nil
}

// List returns up to limit (0: all) dead letters of consumer, oldest first.
func (t *DeadLetterTable) List(ctx context.Context, consumer string, limit int) ([]DeadLetter, error) {
	return t.list(ctx, consumer, limit, letterQuery{})
}

// Summaries is List without the events' payloads and headers (each Event's Payload and
// Headers are nil): what a listing of them shows, read without the payloads, which may be
// as large as the consumer's producer made them.
func (t *DeadLetterTable) Summaries(ctx context.Context, consumer string, limit int) ([]DeadLetter, error) {
	return t.list(ctx, consumer, limit, letterQuery{summaries: true})
}

// Counts returns how many dead letters each of consumers holds (a consumer with none is
// absent from the map), read from the table's primary key alone.
func (t *DeadLetterTable) Counts(ctx context.Context, consumers ...string) (map[string]int, error) {
	out := map[string]int{}
	if len(consumers) == 0 {
		return out, nil
	}
	var rows []struct {
		Consumer string `bun:"consumer"`
		N        int    `bun:"n"`
	}
	err := t.db.NewSelect().Model((*deadLetterRow)(nil)).Column("consumer").ColumnExpr("COUNT(*) AS n").
		Where("consumer IN (?)", bun.List(consumers)).Group("consumer").Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("outbox: counting dead letters: %w", sqlutil.Unavailable(t.db, err))
	}
	for _, r := range rows {
		out[r.Consumer] = r.N
	}
	return out, nil
}

// letterQuery says which dead letters list reads, and how much of each.
type letterQuery struct {
	unaltered bool // only the letters stored as they came
	summaries bool // without their payloads and headers
}

// list is List, as lq says.
func (t *DeadLetterTable) list(ctx context.Context, consumer string, limit int, lq letterQuery) ([]DeadLetter, error) {
	var rows []deadLetterRow
	q := t.db.NewSelect().Model(&rows).Where("consumer = ?", consumer).OrderExpr("dead_at, id")
	if lq.unaltered {
		q = q.Where("altered IS NULL")
	}
	if lq.summaries {
		q = q.ExcludeColumn("payload", "headers")
	}
	if limit > 0 {
		q = q.Limit(int64(limit))
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("outbox: listing dead letters of %s: %w", consumer, sqlutil.Unavailable(t.db, err))
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
		if r.Altered != nil {
			out[i].Altered = *r.Altered
		}
	}
	return out, nil
}

// Remove deletes the dead letter id of consumer, if there is one: for a letter the
// operator resolved by hand, such as one stored altered, which Redrive leaves alone.
func (t *DeadLetterTable) Remove(ctx context.Context, consumer, id string) error {
	if strings.HasSuffix(consumer, " ") || strings.HasSuffix(id, " ") {
		// No consumer stores a letter under such a name or ID (NewConsumer and storable
		// refuse them); MySQL, which ignores trailing spaces, would remove that of "c".
		return nil
	}
	if err := removeLetter(ctx, t.db, consumer, id); err != nil {
		return fmt.Errorf("outbox: removing dead letter %s of %s: %w", id, consumer, err)
	}
	return nil
}

func removeLetter(ctx context.Context, db bun.IDB, consumer, id string) error {
	_, err := db.NewDelete().Model((*deadLetterRow)(nil)).Where("consumer = ? AND id = ?", consumer, id).Exec(ctx)
	return err
}

// Redrive delivers the consumer's dead letters from its DeadLetterTable again, oldest first,
// up to limit (0: all), once the cause is fixed. A letter that is applied now (or was applied
// meanwhile) leaves the table; one that fails again is retried and dead-lettered anew,
// replacing its row. The letter leaves the table only after it is applied, so a crash midway
// loses nothing. A letter stored altered (DeadLetter.Altered) is left alone: what it holds is
// not the event that was sent; List shows it, and the operator resolves it by hand, then
// removes it (DeadLetterTable.Remove). It returns how many letters were applied, and fails
// with ErrInvalidConfig when the consumer's dead letters go elsewhere (for a Kafka dead-letter
// topic, see saramaoutbox.Redrive).
func (c *Consumer) Redrive(ctx context.Context, limit int) (int, error) {
	table, ok := c.s.deadLetters.(*DeadLetterTable)
	if !ok {
		return 0, invalidConfig("consumer %s keeps its dead letters elsewhere than a DeadLetterTable", c.name)
	}
	letters, err := table.list(ctx, c.name, limit, letterQuery{unaltered: true})
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
		if err := table.Remove(ctx, c.name, dl.ID); err != nil {
			return applied, err
		}
		applied++
	}
	return applied, nil
}

// Skip gives up for good on the consumer's dead letter id, once an operator has decided
// the event must never be applied (obsolete, or applied by hand). In one transaction the
// letter is removed and the event recorded as processed, so that the broker delivering it
// again (a restart before its offset was committed, a replay from an earlier offset) does
// not apply it; a delivery racing the skip either applies the event first (Skip then
// fails) or finds it processed. The skip is kept for good, and so is the event's processed
// record, whatever the Cleaner's retention.
//
// Skip is idempotent: a letter already skipped returns nil. It fails with
// ErrAlreadyApplied for an event the consumer has applied (redriven, or delivered again
// and applied while its letter stayed: Redrive removes that letter), with ErrNotDeadLetter
// for an id that is neither, both changing nothing, and with ErrInvalidConfig when the
// consumer's dead letters are kept elsewhere than a DeadLetterTable on its own database
// (the letter and the record must change together).
func (c *Consumer) Skip(ctx context.Context, id string) error {
	table, ok := c.s.deadLetters.(*DeadLetterTable)
	if !ok || table.db.DB != c.db.DB {
		return invalidConfig("consumer %s keeps its dead letters elsewhere than a DeadLetterTable on its database", c.name)
	}
	if checkDeliveredID(id) != "" { // no letter is stored under such an ID (storable)
		return fmt.Errorf("%w: skipping %q of consumer %s", ErrNotDeadLetter, id, c.name)
	}
	var outcome error
	err := sqlutil.InTx(ctx, c.db, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewDelete().Model((*deadLetterRow)(nil)).Where("consumer = ? AND id = ?", c.name, id).Exec(ctx)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			skipped, applied, err := c.skipState(ctx, tx, id)
			switch {
			case err != nil || skipped:
				return err
			case applied:
				outcome = fmt.Errorf("%w: %s of consumer %s", ErrAlreadyApplied, id, c.name)
			default:
				outcome = fmt.Errorf("%w: %s of consumer %s", ErrNotDeadLetter, id, c.name)
			}
			return nil
		}
		now := c.s.now()
		_, err = tx.NewInsert().Model(&processedRow{Consumer: c.name, ID: id, ProcessedAt: now}).Exec(ctx)
		if sqlutil.IsDuplicateKey(err) {
			outcome = fmt.Errorf("%w: %s of consumer %s", ErrAlreadyApplied, id, c.name)
			return outcome // rolls the letter's removal back
		}
		if err != nil {
			return err
		}
		_, err = tx.NewInsert().Model(&skipRow{Consumer: c.name, ID: id, SkippedAt: now}).Exec(ctx)
		return err
	})
	if outcome != nil {
		return outcome
	}
	if err != nil {
		return ctxOr(ctx, fmt.Errorf("outbox: consumer %s: skipping dead letter %s: %w", c.name, id, sqlutil.Unavailable(c.db, err)))
	}
	return nil
}

// skipState reads whether consumer c skipped the event id, or applied it.
func (c *Consumer) skipState(ctx context.Context, tx bun.Tx, id string) (skipped, applied bool, err error) {
	n, err := tx.NewSelect().Table(TableConsumerSkips).Where("consumer = ? AND id = ?", c.name, id).Count(ctx)
	if err != nil || n > 0 {
		return n > 0, false, err
	}
	n, err = tx.NewSelect().Table(TableProcessed).Where("consumer = ? AND id = ?", c.name, id).Count(ctx)
	return false, n > 0, err
}

// letterIDSpace is the UUID name space of the IDs DeadLetterTable derives for events whose
// own cannot key a row.
var letterIDSpace = uuid.MustParse("8f1d7c52-3f0e-4d36-9a8e-5b0f2c6a9e41")

// storable returns dl in a form outbox_dead_letters takes, with Altered saying what was
// changed, and its headers encoded; maxBytes bounds its payload, counted twice, and its
// encoded headers together.
func storable(dl DeadLetter, maxBytes int) (DeadLetter, *string, error) {
	var altered []string
	if reason := checkDeliveredID(dl.ID); reason != "" {
		altered = append(altered, fmt.Sprintf("ID %s %s", quoteCut(dl.ID), reason))
		dl.ID = letterID(dl.Event)
	}
	for _, f := range []struct {
		name  string
		s     *string
		runes int
	}{{"topic", &dl.Topic, MaxTopicLen}, {"key", &dl.Key, MaxKeyLen}, {"type", &dl.Type, MaxTypeLen}} {
		if fit := fitText(*f.s, f.runes); fit != *f.s {
			altered = append(altered, fmt.Sprintf("%s was %s", f.name, quoteCut(*f.s)))
			*f.s = fit
		}
	}
	if y := dl.CreatedAt.UTC().Year(); y < 1 || y > 9999 {
		altered = append(altered, fmt.Sprintf("created at %s, past what a column takes", dl.CreatedAt.UTC().Format(time.RFC3339Nano)))
		dl.CreatedAt = time.Time{}
	}
	dl.Error = cutText(fitText(dl.Error, maxDeadLetterError), maxDeadLetterError)
	for name, value := range dl.Headers {
		if !utf8.ValidString(name) || !utf8.ValidString(value) {
			altered = append(altered, "headers held invalid UTF-8, replaced by U+FFFD")
			break
		}
	}
	h, err := encodeHeaders(dl.Headers)
	if err != nil {
		return dl, nil, err
	}
	if h != nil && 2*len(dl.Payload)+escapedLen(*h) > maxBytes {
		altered = append(altered, fmt.Sprintf("headers of %d bytes dropped", len(*h)))
		dl.Headers, h = nil, nil
	}
	if 2*len(dl.Payload) > maxBytes {
		altered = append(altered, fmt.Sprintf("payload of %d bytes dropped", len(dl.Payload)))
		dl.Payload = nil
	}
	if len(altered) > 0 {
		dl.Altered = strings.Join(altered, "; ")
	}
	return dl, h, nil
}

// maxLetterBytes bounds a letter's payload, counted twice (bun sends bytes in hex), and its
// encoded headers, escaped, together on MySQL, to stay within max_allowed_packet (16 MiB by default
// on MariaDB): a larger statement is refused, at every delivery.
const maxLetterBytes = 12 << 20

// escapedLen is the length of s in a MySQL statement: bun doubles each quote and backslash.
func escapedLen(s string) int { return len(s) + strings.Count(s, "'") + strings.Count(s, `\`) }

// letterID derives a UUID from every field of ev.
func letterID(ev Event) string {
	fields := []string{ev.ID, ev.Topic, ev.Key, ev.Type, string(ev.Payload),
		strconv.FormatInt(ev.Seq, 10), ev.CreatedAt.UTC().Format(time.RFC3339Nano)}
	for _, name := range slices.Sorted(maps.Keys(ev.Headers)) {
		fields = append(fields, name, ev.Headers[name])
	}
	var b []byte
	for _, field := range fields {
		b = binary.AppendUvarint(b, uint64(len(field)))
		b = append(b, field...)
	}
	return uuid.NewSHA1(letterIDSpace, b).String()
}

// fitText returns s with invalid UTF-8 and NUL bytes (which SQLite refuses in a statement)
// replaced by U+FFFD, cut to at most n characters.
func fitText(s string, n int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for range n {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i]
}

// quoteCut returns s quoted in Go syntax (control characters and invalid UTF-8 escaped),
// its first 64 bytes only when it is longer, with its length.
func quoteCut(s string) string {
	if len(s) <= 64 {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:64]), len(s))
}
