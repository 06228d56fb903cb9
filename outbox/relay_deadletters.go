package outbox

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// DeadLetters returns up to limit (0: all) events the relay set aside because the
// publisher can never take them, oldest first: each with its reason in Error and the time
// it was set aside in At (Consumer is empty, Attempts 0). Later events of their streams
// wait behind them until Redrive or Skip.
func (r *Relay) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	return r.deadLetters(ctx, limit, true)
}

// DeadLetterSummaries is DeadLetters without the events' payloads and headers (each
// Event's Payload and Headers are nil): what a listing of them shows, read without the
// payloads, which are up to MaxPayloadLen each, and often why the publisher refused the
// event (too large for the broker).
func (r *Relay) DeadLetterSummaries(ctx context.Context, limit int) ([]DeadLetter, error) {
	return r.deadLetters(ctx, limit, false)
}

// deadLetters is DeadLetters, reading the payloads and headers only when whole is set.
func (r *Relay) deadLetters(ctx context.Context, limit int, whole bool) ([]DeadLetter, error) {
	var rows []eventRow
	q := r.db.NewSelect().Model(&rows).Where("dead_at IS NOT NULL AND sent_at IS NULL").OrderExpr("pos")
	if !whole {
		q = q.ExcludeColumn("payload", "headers")
	}
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
// is set aside again with the new reason. It is idempotent: a dead letter already
// redriven (in line again, or published since) is left as it is and Redrive returns nil,
// so a Redrive whose answer was lost can be sent again, however long after. One already
// skipped fails with ErrResolvedOtherwise, and an id that was never a dead letter of the
// relay (unknown, or an ordinary event) with ErrNotDeadLetter; neither changes anything.
// Each resolution is kept for good in outbox_relay_resolutions, one small row per dead
// letter, which the Cleaner leaves alone: the event's own row leaves with the sent events.
func (r *Relay) Redrive(ctx context.Context, id string) error {
	return r.resolve(ctx, false, id)
}

// Skip gives up on the dead letter id for good: it is never published, and the events
// waiting behind it in its stream flow on. Consumers see a gap in the stream at its
// sequence number. The row keeps its reason and dead_at, gets sent_at (the time of the
// skip) and leaves with the sent events after the Cleaner's retention. Like Redrive, it
// is idempotent (a dead letter already skipped: nil), and fails with ErrResolvedOtherwise
// for one already redriven and ErrNotDeadLetter for an id that was never a dead letter,
// changing nothing.
func (r *Relay) Skip(ctx context.Context, id string) error {
	return r.resolve(ctx, true, id)
}

// resolutionRow is a row of outbox_relay_resolutions: how an operator last resolved the
// relay's dead letter ID.
type resolutionRow struct {
	bun.BaseModel `bun:"table:outbox_relay_resolutions"`

	ID         string    `bun:"id,pk"`
	Skipped    bool      `bun:"skipped"`
	ResolvedAt time.Time `bun:"resolved_at"`
}

// resolve redrives (skip false) or skips the dead letter id, and records the resolution
// in the same transaction; see Redrive and Skip.
func (r *Relay) resolve(ctx context.Context, skip bool, id string) error {
	verb, set, args := "redriving", "dead_at = NULL, dead_reason = NULL", []any(nil)
	if skip {
		verb, set, args = "skipping", "sent_at = ?", []any{r.s.now()}
	}
	// No event has such an ID; and MySQL's collations ignore trailing spaces: "x " would
	// resolve the dead letter "x".
	if len(id) > MaxIDLen || !utf8.ValidString(id) || hasControl(id) || strings.HasSuffix(id, " ") {
		return fmt.Errorf("%w: %s %q", ErrNotDeadLetter, verb, id)
	}
	var resolved bool
	err := sqlutil.InTx(ctx, r.db, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Table(TableEvents).Set(set, args...).
			Where("id = ? AND dead_at IS NOT NULL AND sent_at IS NULL", id).Exec(ctx)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if resolved = n == 1; err != nil || !resolved {
			return err
		}
		// REPLACE: a dead letter redriven, set aside again and then skipped is skipped.
		_, err = tx.NewInsert().Model(&resolutionRow{ID: id, Skipped: skip, ResolvedAt: r.s.now()}).Replace().Exec(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("outbox: %s dead letter %s: %w", verb, id, sqlutil.Unavailable(r.db, err))
	}
	if resolved {
		r.s.logger.Warn("outbox relay dead letter resolved by an operator", "action", verb, "id", id)
		r.Notify()
		return nil
	}
	// Not a dead letter now: resolved already (this resolution sent again after its answer
	// was lost, or another operator's), or never one.
	var row resolutionRow
	switch err := r.db.NewSelect().Model(&row).Where("id = ?", id).Scan(ctx); {
	case sqlutil.IsNoRows(err):
		return fmt.Errorf("%w: %s %s: never set aside", ErrNotDeadLetter, verb, id)
	case err != nil:
		return fmt.Errorf("outbox: %s dead letter %s: %w", verb, id, sqlutil.Unavailable(r.db, err))
	case row.Skipped != skip:
		return fmt.Errorf("%w: %s %s: %s already", ErrResolvedOtherwise, verb, id, map[bool]string{false: "redriven", true: "skipped"}[row.Skipped])
	}
	return nil
}
