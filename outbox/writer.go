package outbox

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Writer adds events to the outbox inside the caller's transaction.
type Writer struct{ s settings }

// NewWriter returns a Writer. Options: WithMaxEventBytes (default DefaultMaxEventBytes),
// WithClock (CreatedAt), WithLogger.
func NewWriter(opts ...Option) (*Writer, error) {
	s, err := newSettings(kindWriter, opts)
	if err != nil {
		return nil, err
	}
	return &Writer{s: s}, nil
}

// Add adds events with the default Writer (the system clock). See Writer.Add.
func Add(ctx context.Context, db bun.IDB, events ...Event) ([]Event, error) {
	w, _ := NewWriter()
	return w.Add(ctx, db, events...)
}

// Add writes events to the outbox through db and returns them with ID, CreatedAt and Seq
// filled in.
//
// Pass the bun.Tx of the business change the events describe: they commit or roll back
// with it, and the relay sees nothing before the commit. Add then runs under a savepoint of
// that transaction, so a failed Add leaves the caller's transaction as it was. Given a
// *bun.DB instead, Add runs in a transaction of its own.
//
// Sequence numbers: each stream (Topic, Key) has a row in outbox_streams holding its last
// sequence number. Add increments it in the same transaction (an upsert by primary key
// per stream, streams in sorted order so concurrent writers cannot deadlock on each other)
// and numbers the stream's events from there in the order given. The row stays locked
// until the transaction ends, which serialises concurrent writers to one aggregate: the
// second waits for the first to commit or roll back. Only that row is locked: writers of
// other aggregates never wait. A rollback undoes the increment too, so committed events of
// a stream are numbered 1, 2, 3, ... without a gap, and commit in that order.
//
// Idempotency: an event with an ID of the caller's choosing is added at most once while its
// row is in the outbox; adding it again fails with ErrDuplicateEvent and writes nothing.
// The row goes when the Cleaner deletes it (its retention after the event was sent): the
// same ID added after that is a new event, with the next sequence number of its stream,
// and is published again; a Consumer still applies it once while it keeps its processed
// record (see WithProcessedRetention). A caller that may add an event again later than the
// retention keeps its own record of what it added, as commerce does by writing each event
// in the transaction of the one state change it describes. Without IDs, idempotency comes
// from the caller's transaction: the events are written exactly when it commits.
//
// Invalid events fail with an *EventError wrapping ErrInvalidEvent, and nothing is written
// (headers must be valid UTF-8 and take at most 64 KiB encoded as JSON);
// an event larger than the limit (WithMaxEventBytes), with one wrapping ErrEventTooLarge.
func (w *Writer) Add(ctx context.Context, db bun.IDB, events ...Event) ([]Event, error) {
	if len(events) == 0 {
		return nil, nil
	}
	out, err := w.prepare(events)
	if err != nil {
		return nil, err
	}
	counts := make(map[Stream]int64)
	for _, ev := range out {
		counts[ev.Stream()]++
	}
	streams := sortedStreams(counts)
	rows := make([]eventRow, len(out))
	err = sqlutil.InTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
		next, err := reserveSeqs(ctx, tx, streams, counts)
		if err != nil {
			return err
		}
		for i := range out {
			st := out[i].Stream()
			out[i].Seq = next[st]
			next[st]++
			if rows[i], err = newEventRow(out[i]); err != nil {
				return err
			}
		}
		if _, err := tx.NewInsert().Model(&rows).Exec(ctx); err != nil {
			if sqlutil.IsDuplicateKey(err) {
				return duplicateEvent(ctx, tx, out, err)
			}
			return fmt.Errorf("outbox: adding events: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// prepare validates the events and fills ID and CreatedAt.
func (w *Writer) prepare(events []Event) ([]Event, error) {
	out := make([]Event, len(events))
	seen := make(map[string]int, len(events))
	now := w.s.now()
	for i, ev := range events {
		if err := ev.validate(i, false); err != nil {
			return nil, err
		}
		if err := checkStoredHeaders(i, ev); err != nil {
			return nil, err
		}
		if size := ev.Size(); size > w.s.maxEventBytes {
			return nil, &EventError{Index: i, ID: ev.ID, Field: "Payload", Err: ErrEventTooLarge,
				Reason: fmt.Sprintf("makes the event %d bytes, more than the limit of %d", size, w.s.maxEventBytes)}
		}
		if ev.ID == "" {
			id, err := uuid.NewV7()
			if err != nil {
				return nil, fmt.Errorf("outbox: generating an event ID: %w", err)
			}
			ev.ID = id.String()
		}
		if j, dup := seen[ev.ID]; dup {
			return nil, &EventError{Index: i, ID: ev.ID, Field: "ID", Reason: fmt.Sprintf("repeats event %d of the call", j), Err: ErrDuplicateEvent}
		}
		seen[ev.ID] = i
		if ev.CreatedAt.IsZero() {
			ev.CreatedAt = now
		} else {
			ev.CreatedAt = ev.CreatedAt.UTC().Truncate(time.Microsecond)
		}
		ev.Headers = maps.Clone(ev.Headers)
		ev.Seq = 0
		out[i] = ev
	}
	return out, nil
}

// reserveSeqs adds counts[s] to the last sequence number of each stream and returns the
// first number reserved for each.
//
// On MySQL/MariaDB each stream is one statement touching only its own row by primary key,
// streams in sorted order: INSERT ... ON DUPLICATE KEY UPDATE last_seq =
// LAST_INSERT_ID(last_seq + n). A duplicate primary key takes an exclusive lock on that
// record alone (no gap), and a new stream's insert locks only the new record, so writers
// of other aggregates — adjacent ones in the index included — never wait for this
// transaction, and writers of shared streams lock them in one order. LAST_INSERT_ID(expr)
// hands the new value back in the statement's OK packet, so this is one round trip per
// stream. No VALUES() in the update clause: MySQL 8 deprecates it, and the alias form
// that replaces it does not run on MariaDB.
//
// SQLite has a single writer, so one multi-row upsert with RETURNING does it.
func reserveSeqs(ctx context.Context, tx bun.Tx, streams []Stream, counts map[Stream]int64) (map[Stream]int64, error) {
	next := make(map[Stream]int64, len(streams))
	if sqlutil.IsSQLite(tx) {
		rows := make([]streamRow, len(streams))
		for i, st := range streams {
			rows[i] = streamRow{Topic: st.Topic, Key: st.Key, LastSeq: counts[st]}
		}
		var got []streamRow
		err := tx.NewInsert().Model(&rows).On("CONFLICT (topic, aggregate_key) DO UPDATE").
			Set("last_seq = last_seq + EXCLUDED.last_seq").Returning("topic, aggregate_key, last_seq").Scan(ctx, &got)
		if err != nil {
			return nil, fmt.Errorf("outbox: reserving sequence numbers: %w", err)
		}
		for _, r := range got {
			st := Stream{Topic: r.Topic, Key: r.Key}
			next[st] = r.LastSeq - counts[st] + 1
		}
	} else {
		for _, st := range streams {
			n := counts[st]
			res, err := tx.ExecContext(ctx, "INSERT INTO "+TableStreams+" (topic, aggregate_key, last_seq) VALUES (?, ?, LAST_INSERT_ID(?)) "+
				"ON DUPLICATE KEY UPDATE last_seq = LAST_INSERT_ID(last_seq + ?)", st.Topic, st.Key, n, n)
			if err != nil {
				return nil, fmt.Errorf("outbox: reserving sequence numbers of %s/%s: %w", st.Topic, st.Key, err)
			}
			last, err := res.LastInsertId()
			if err == nil && last == 0 { // a server that leaves the OK packet's ID empty
				err = tx.QueryRowContext(ctx, "SELECT LAST_INSERT_ID()").Scan(&last)
			}
			if err != nil {
				return nil, fmt.Errorf("outbox: reading the sequence number of %s/%s: %w", st.Topic, st.Key, err)
			}
			next[st] = last - n + 1
		}
	}
	if len(next) != len(streams) {
		return nil, fmt.Errorf("outbox: reserving sequence numbers: %d of %d streams found", len(next), len(streams))
	}
	return next, nil
}

// duplicateEvent finds which event of out already exists, for the error.
func duplicateEvent(ctx context.Context, tx bun.Tx, out []Event, cause error) error {
	ids := make([]string, len(out))
	for i, ev := range out {
		ids[i] = ev.ID
	}
	var existing []string
	if err := tx.NewSelect().Table(TableEvents).Column("id").Where("id IN (?)", bun.List(ids)).Scan(ctx, &existing); err != nil || len(existing) == 0 {
		return fmt.Errorf("%w: %w", ErrDuplicateEvent, cause)
	}
	for i, ev := range out {
		if ev.ID == existing[0] {
			return &EventError{Index: i, ID: ev.ID, Field: "ID", Reason: "is already in the outbox", Err: ErrDuplicateEvent}
		}
	}
	return fmt.Errorf("%w: %w", ErrDuplicateEvent, cause)
}

// maxStoredHeaders is the most the headers column (TEXT on MySQL) holds: the headers
// encoded as JSON.
const maxStoredHeaders = 65535

// checkStoredHeaders refuses headers the outbox table cannot keep as given: a name or value
// that is not valid UTF-8 (JSON would replace its bytes), or more than maxStoredHeaders
// bytes once encoded (the column would refuse or cut them).
func checkStoredHeaders(i int, ev Event) error {
	bad := func(reason string) error {
		return &EventError{Index: i, ID: ev.ID, Field: "Headers", Reason: reason, Err: ErrInvalidEvent}
	}
	for name, value := range ev.Headers {
		if !utf8.ValidString(name) || !utf8.ValidString(value) {
			return bad("has a name or value that is not valid UTF-8")
		}
	}
	h, err := encodeHeaders(ev.Headers)
	if err != nil {
		return bad("do not encode: " + err.Error())
	}
	if h != nil && len(*h) > maxStoredHeaders {
		return bad(fmt.Sprintf("take %d bytes encoded, more than %d", len(*h), maxStoredHeaders))
	}
	return nil
}

func newEventRow(ev Event) (eventRow, error) {
	h, err := encodeHeaders(ev.Headers)
	if err != nil {
		return eventRow{}, fmt.Errorf("outbox: encoding headers of %s: %w", ev.ID, err)
	}
	return eventRow{
		ID: ev.ID, eventColumns: eventColumns{Topic: ev.Topic, Key: ev.Key, Seq: ev.Seq, Type: ev.Type,
			Payload: ev.Payload, Headers: h, CreatedAt: ev.CreatedAt},
	}, nil
}

func sortedStreams[V any](m map[Stream]V) []Stream {
	out := make([]Stream, 0, len(m))
	for st := range m {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Key < out[j].Key
	})
	return out
}
