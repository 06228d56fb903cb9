package outbox

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/backoff"
)

// Cleaner deletes sent events older than the retention (the outbox-cleanup job of seed 000),
// and optionally old processed-event records and consumers' leases, in bounded batches so
// no statement holds many locks or a long transaction. It never deletes an unsent event.
type Cleaner struct {
	db *bun.DB
	s  settings
}

// NewCleaner returns a Cleaner on db. Options: WithRetention (sent events, default 7 days),
// WithProcessedRetention (processed records, default: keep), WithBatchSize (rows per
// DELETE, default 1000), WithInterval (between Run passes, default 1 minute), WithClock,
// WithLogger, WithObserver.
func NewCleaner(db *bun.DB, opts ...Option) (*Cleaner, error) {
	if db == nil {
		return nil, invalidConfig("NewCleaner needs a database")
	}
	s, err := newSettings(kindCleaner, opts)
	if err != nil {
		return nil, err
	}
	s.defaults(1000, time.Minute, 0, 0)
	return &Cleaner{db: db, s: s}, nil
}

// CleanOnce deletes, batch by batch, every row due for deletion now and returns how many
// it deleted. Each batch is its own statement: one interrupted midway keeps what it did.
func (c *Cleaner) CleanOnce(ctx context.Context) (int, error) {
	now := c.s.now()
	total, err := c.sweep(ctx, TableEvents, func() ([]string, []any, error) {
		var pos []int64
		err := c.db.NewSelect().Table(TableEvents).Column("pos").
			Where("sent_at IS NOT NULL AND sent_at < ?", now.Add(-c.s.retention)).
			OrderExpr("sent_at").Limit(int64(c.s.batchSize)).Scan(ctx, &pos)
		args := make([]any, len(pos))
		for i, p := range pos {
			args[i] = p
		}
		return placeholders("?", len(pos)), args, err
	}, "pos IN (%s)")
	if err != nil || c.s.keepProcessed <= 0 {
		return total, err
	}
	// Processed records and leases are keyed by (consumer, id) and dated by a column. The
	// record of an event its consumer also holds as a dead letter (dead-lettered, then
	// delivered again and applied) is kept, whatever its age: it is what tells Redrive,
	// however late, that the event was applied. It goes once the letter is gone. The record
	// of a skipped event (Consumer.Skip) is kept for good: it is what keeps the event from
	// being applied when the broker delivers it again.
	sameEvent := " WHERE x.consumer = " + TableProcessed + ".consumer AND x.id = " + TableProcessed + ".id)"
	for _, t := range []struct{ table, at, keep string }{
		{TableProcessed, "processed_at", " AND NOT EXISTS (SELECT 1 FROM " + TableDeadLetters + " AS x" + sameEvent +
			" AND NOT EXISTS (SELECT 1 FROM " + TableConsumerSkips + " AS x" + sameEvent},
		{TableInflight, "leased_at", ""},
	} {
		n, err := c.sweep(ctx, t.table, func() ([]string, []any, error) {
			var keys []struct {
				Consumer string `bun:"consumer"`
				ID       string `bun:"id"`
			}
			err := c.db.NewSelect().Table(t.table).Column("consumer", "id").
				Where("? < ?"+t.keep, bun.Ident(t.at), now.Add(-c.s.keepProcessed)).
				OrderExpr("?", bun.Ident(t.at)).Limit(int64(c.s.batchSize)).Scan(ctx, &keys)
			args := make([]any, 0, 2*len(keys))
			for _, k := range keys {
				args = append(args, k.Consumer, k.ID)
			}
			return placeholders("(?, ?)", len(keys)), args, err
		}, "(consumer, id) IN (%s)"+t.keep)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// sweep deletes from table the rows that pick names, batch by batch, until a batch is not
// full; where is the DELETE's condition with %s for the placeholders.
func (c *Cleaner) sweep(ctx context.Context, table string, pick func() ([]string, []any, error), where string) (int, error) {
	total := 0
	for {
		ph, args, err := pick()
		if err != nil {
			return total, fmt.Errorf("outbox: cleaning %s: %w", table, err)
		}
		if len(ph) == 0 {
			return total, nil
		}
		q := fmt.Sprintf("DELETE FROM %s WHERE "+where, table, strings.Join(ph, ", "))
		res, err := c.db.ExecContext(ctx, q, args...)
		if err != nil {
			return total, fmt.Errorf("outbox: cleaning %s: %w", table, err)
		}
		n, _ := res.RowsAffected()
		total += int(n)
		c.s.metrics.Cleaned(table, int(n))
		if len(ph) < c.s.batchSize {
			return total, nil
		}
	}
}

func placeholders(one string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = one
	}
	return out
}

// Run cleans every WithInterval until ctx is done, then returns nil. A failed pass is
// logged and tried again at the next interval.
func (c *Cleaner) Run(ctx context.Context) error {
	for {
		n, err := c.CleanOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.s.logger.Warn("outbox cleaner pass failed", "err", err, "deleted", n)
		} else if n > 0 {
			c.s.logger.Info("outbox cleaner pass", "deleted", n)
		}
		if backoff.Sleep(ctx, c.s.interval) != nil {
			return nil
		}
	}
}
