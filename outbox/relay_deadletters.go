package outbox

import (
	"context"
	"fmt"
	"unicode/utf8"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// DeadLetters returns up to limit (0: all) events the relay set aside because the
// publisher can never take them, oldest first: each with its reason in Error and the time
// it was set aside in At (Consumer is empty, Attempts 0). Later events of their streams
// wait behind them until Redrive or Skip.
func (r *Relay) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	var rows []eventRow
	q := r.db.NewSelect().Model(&rows).Where("dead_at IS NOT NULL AND sent_at IS NULL").OrderExpr("pos")
	if limit > 0 {
		q = q.Limit(int64(limit))
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("outbox: listing the relay's dead letters: %w", sqlutil.Unavailable(r.db, err))
	}
	out := make([]DeadLetter, len(rows))
	for i, row := range rows {
		ev, err := row.event()
		if err != nil { // listed without the headers that do not decode; its reason says so
			row.Headers = nil
			ev, _ = row.event()
		}
		out[i] = DeadLetter{Event: ev, Error: *row.Reason, At: row.DeadAt.UTC()}
	}
	return out, nil
}

// Redrive puts the dead letter id back in line, once its cause is fixed (the broker's or
// producer's limit raised, say): the relay publishes it next, in its place in its stream,
// and the events waiting behind it follow in order. If the publisher still refuses it, it
// is set aside again with the new reason. An id that is not a dead letter of the relay
// (unknown, already redriven, skipped or published) fails with ErrNotDeadLetter and
// changes nothing, so a Redrive whose outcome is unknown can be retried.
func (r *Relay) Redrive(ctx context.Context, id string) error {
	return r.resolve(ctx, "redriving", id, "dead_at = NULL, dead_reason = NULL")
}

// Skip gives up on the dead letter id for good: it is never published, and the events
// waiting behind it in its stream flow on. Consumers see a gap in the stream at its
// sequence number. The row keeps its reason and dead_at, gets sent_at (the time of the
// skip) and leaves with the sent events after the Cleaner's retention. An id that is not a
// dead letter of the relay fails with ErrNotDeadLetter and changes nothing.
func (r *Relay) Skip(ctx context.Context, id string) error {
	return r.resolve(ctx, "skipping", id, "sent_at = ?", r.s.now())
}

func (r *Relay) resolve(ctx context.Context, verb, id, set string, args ...any) error {
	if len(id) > MaxIDLen || !utf8.ValidString(id) || hasControl(id) { // no event has such an ID
		return fmt.Errorf("%w: %s %q", ErrNotDeadLetter, verb, id)
	}
	res, err := r.db.NewUpdate().Table(TableEvents).Set(set, args...).
		Where("id = ? AND dead_at IS NOT NULL AND sent_at IS NULL", id).Exec(ctx)
	if err != nil {
		return fmt.Errorf("outbox: %s dead letter %s: %w", verb, id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("outbox: %s dead letter %s: %w", verb, id, err)
	}
	if n != 1 {
		return fmt.Errorf("%w: %s %s", ErrNotDeadLetter, verb, id)
	}
	r.s.logger.Warn("outbox relay dead letter resolved by an operator", "action", verb, "id", id)
	r.Notify()
	return nil
}
