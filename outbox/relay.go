package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/backoff"
	"github.com/commercekit/commercekit/internal/sqlutil"
)

// Relay publishes committed events from the outbox and marks them sent.
//
// Several relays (in one process or many) may run against one MySQL/MariaDB database; on
// SQLite run one per database. See the package documentation for how events are picked,
// why per-key order holds, and what happens on failures.
type Relay struct {
	db   *bun.DB
	pub  Publisher
	s    settings
	mu   sync.Mutex // one round at a time per Relay
	wake chan struct{}
}

// NewRelay returns a Relay that reads the outbox on db and hands events to pub. Options:
// WithBatchSize (events per round, default 100), WithInterval (idle poll, default 1s),
// WithBackoff (after a failed round, default 100ms..30s), WithClock, WithLogger,
// WithMetrics.
//
// On MySQL the relay keeps a transaction open while pub publishes, so db's pool needs a
// connection for it besides those the rest of the program (and, with a Dispatcher, the
// consumers) use.
func NewRelay(db *bun.DB, pub Publisher, opts ...Option) (*Relay, error) {
	if db == nil || pub == nil {
		return nil, invalidConfig("NewRelay needs a database and a publisher")
	}
	s, err := newSettings(opts)
	if err != nil {
		return nil, err
	}
	s.defaults(100, time.Second, 100*time.Millisecond, 30*time.Second)
	return &Relay{db: db, pub: pub, s: s, wake: make(chan struct{}, 1)}, nil
}

// Notify wakes a Run loop that is waiting for its next poll, e.g. right after a transaction
// that added events committed. It never blocks, and does not cut short the pause after a
// failure.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// RelayOnce runs one round: it picks up to the batch size of unsent events, publishes those
// it may (see the package documentation on order) and marks them sent. It returns how many
// it published and marked. Tests and one-shot jobs call it; services call Run.
func (r *Relay) RelayOnce(ctx context.Context) (int, error) {
	n, _, err := r.round(ctx)
	return n, err
}

// Run relays until ctx is done, then returns nil. While the outbox holds a full batch it
// runs rounds back to back; when it is empty it waits WithInterval or until Notify. After a
// failed round (broker down, database error) it pauses with exponential, jittered backoff
// and tries again, so nothing is lost and nothing overtakes: unsent events stay in the
// outbox until a round publishes them.
func (r *Relay) Run(ctx context.Context) error {
	failures := 0
	for {
		n, full, err := r.round(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait, wakeable := r.s.interval, true
		switch {
		case err != nil:
			failures++
			wait, wakeable = backoff.Equal(failures, r.s.minBackoff, r.s.maxBackoff), false
			r.s.logger.Warn("outbox relay round failed", "err", err, "failures", failures, "pause", wait)
		case full && n > 0:
			failures = 0
			continue
		default:
			failures = 0
		}
		if !r.pause(ctx, wait, wakeable) {
			return nil
		}
	}
}

// pause waits d, or until Notify when wakeable; false when ctx is done.
func (r *Relay) pause(ctx context.Context, d time.Duration, wakeable bool) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	var wake chan struct{}
	if wakeable {
		wake = r.wake
	}
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wake:
	}
	return true
}

// Lag returns the age of the oldest unsent event, or 0 when every event has been sent.
func (r *Relay) Lag(ctx context.Context) (time.Duration, error) {
	var created []time.Time
	err := r.db.NewSelect().Table(TableEvents).Column("created_at").
		Where("sent_at IS NULL").OrderExpr("pos").Limit(1).Scan(ctx, &created)
	if err != nil {
		return 0, fmt.Errorf("outbox: relay lag: %w", err)
	}
	if len(created) == 0 {
		return 0, nil
	}
	return max(r.s.now().Sub(created[0]), 0), nil
}

// round runs one round; full says the batch was full, so more may be waiting.
func (r *Relay) round(ctx context.Context) (published int, full bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sqlutil.IsSQLite(r.db) {
		published, full, err = r.roundSQLite(ctx)
	} else {
		published, full, err = r.roundLocking(ctx)
	}
	if _, nop := r.s.metrics.(NopMetrics); !nop && ctx.Err() == nil {
		if lag, lagErr := r.Lag(ctx); lagErr == nil {
			r.s.metrics.RelayLag(lag)
		}
	}
	return published, full, err
}

// roundLocking is a round on MySQL/MariaDB. In one READ COMMITTED transaction it locks a
// batch of unsent rows with FOR UPDATE SKIP LOCKED (rows another relay holds, and rows of
// transactions not yet committed, are skipped; READ COMMITTED takes no gap locks, so writers
// adding events are never blocked), keeps of each stream only the run that starts at the
// stream's first unsent event, publishes those, marks them sent and commits. A crash before
// the commit releases the locks and leaves the rows unsent: they are published again.
func (r *Relay) roundLocking(ctx context.Context) (int, bool, error) {
	tx, err := r.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, false, fmt.Errorf("outbox: relay: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var rows []eventRow
	err = tx.NewSelect().Model(&rows).Where("sent_at IS NULL").OrderExpr("pos").
		Limit(int64(r.s.batchSize)).For("UPDATE SKIP LOCKED").Scan(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("outbox: relay: picking events: %w", err)
	}
	full := len(rows) == r.s.batchSize
	if len(rows) == 0 {
		return 0, false, tx.Commit()
	}
	heads, err := unsentHeads(ctx, tx, rows)
	if err != nil {
		return 0, full, err
	}
	sent, pubErr := r.publish(ctx, publishable(rows, heads))
	if len(sent) > 0 {
		if err := r.markSent(ctx, tx, sent); err != nil {
			return 0, full, errors.Join(pubErr, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, full, errors.Join(pubErr, fmt.Errorf("outbox: relay: committing: %w", err))
	}
	r.count(sent)
	return len(sent), full, pubErr
}

// roundSQLite is a round on SQLite, whose single writer rules out a second relay (run one
// per database): it reads a batch of unsent rows, publishes them without holding a
// transaction (so in-process consumers can write meanwhile) and marks them sent in one
// statement. The batch is the oldest unsent rows, so each stream's part starts at its first
// unsent event.
func (r *Relay) roundSQLite(ctx context.Context) (int, bool, error) {
	var rows []eventRow
	err := r.db.NewSelect().Model(&rows).Where("sent_at IS NULL").OrderExpr("pos").Limit(int64(r.s.batchSize)).Scan(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("outbox: relay: picking events: %w", err)
	}
	full := len(rows) == r.s.batchSize
	if len(rows) == 0 {
		return 0, false, nil
	}
	heads := make(map[Stream]int64)
	for _, row := range rows {
		if h, ok := heads[row.stream()]; !ok || row.Seq < h {
			heads[row.stream()] = row.Seq
		}
	}
	sent, pubErr := r.publish(ctx, publishable(rows, heads))
	if len(sent) > 0 {
		if err := r.markSent(ctx, r.db, sent); err != nil {
			return 0, full, errors.Join(pubErr, err)
		}
	}
	r.count(sent)
	return len(sent), full, pubErr
}

// unsentHeads returns, for each stream of rows, the sequence number of its first unsent
// event as committed now (READ COMMITTED reads the latest commit), including events that
// another relay holds locked.
func unsentHeads(ctx context.Context, tx bun.Tx, rows []eventRow) (map[Stream]int64, error) {
	set := make(map[Stream]struct{})
	for _, row := range rows {
		set[row.stream()] = struct{}{}
	}
	where, args := streamsIn(sortedStreams(set))
	var got []struct {
		Topic string `bun:"topic"`
		Key   string `bun:"aggregate_key"`
		Seq   int64  `bun:"seq"`
	}
	err := tx.NewSelect().Table(TableEvents).ColumnExpr("topic, aggregate_key, MIN(seq) AS seq").
		Where("sent_at IS NULL").Where(where, args...).GroupExpr("topic, aggregate_key").Scan(ctx, &got)
	if err != nil {
		return nil, fmt.Errorf("outbox: relay: reading stream heads: %w", err)
	}
	heads := make(map[Stream]int64, len(got))
	for _, g := range got {
		heads[Stream{Topic: g.Topic, Key: g.Key}] = g.Seq
	}
	return heads, nil
}

// publishable keeps, of each stream, the rows that continue the stream without a gap from
// its head: the first unsent event and its successors up to the first one missing from
// rows. Anything further would overtake an event that another relay holds or that is not
// in this batch. Rows keep their order.
func publishable(rows []eventRow, heads map[Stream]int64) []eventRow {
	next := make(map[Stream]int64, len(heads))
	for st, h := range heads {
		next[st] = h
	}
	var out []eventRow
	for _, row := range rows {
		st := row.stream()
		if want, ok := next[st]; ok && row.Seq == want {
			out = append(out, row)
			next[st] = want + 1
		} else {
			delete(next, st) // a gap: nothing later of this stream goes now
		}
	}
	return out
}

// publish hands rows to the publisher and returns those accepted, cut at each stream's
// first failure so a later event never counts as sent before an earlier one.
func (r *Relay) publish(ctx context.Context, rows []eventRow) ([]eventRow, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	events := make([]Event, len(rows))
	for i := range rows {
		ev, err := rows[i].event()
		if err != nil {
			return nil, err
		}
		events[i] = ev
	}
	err := r.pub.Publish(ctx, events)
	if err == nil {
		return rows, nil
	}
	var pe *PublishError
	var sent []eventRow
	if errors.As(err, &pe) {
		blocked := make(map[Stream]bool)
		for i, ev := range events {
			if _, failed := pe.Failed[ev.ID]; failed || blocked[ev.Stream()] {
				blocked[ev.Stream()] = true
				continue
			}
			sent = append(sent, rows[i])
		}
	}
	failed := make(map[string]int)
	for _, row := range rows {
		failed[row.Topic]++
	}
	for _, row := range sent {
		failed[row.Topic]--
	}
	for topic, n := range failed {
		if n > 0 {
			r.s.metrics.PublishFailed(topic, n)
		}
	}
	return sent, fmt.Errorf("outbox: relay: %w", err)
}

func (r *Relay) markSent(ctx context.Context, db bun.IDB, rows []eventRow) error {
	pos := make([]int64, len(rows))
	for i, row := range rows {
		pos[i] = row.Pos
	}
	_, err := db.NewUpdate().Table(TableEvents).Set("sent_at = ?", r.s.now()).Where("pos IN (?)", bun.List(pos)).Exec(ctx)
	if err != nil {
		return fmt.Errorf("outbox: relay: marking events sent: %w", err)
	}
	return nil
}

func (r *Relay) count(sent []eventRow) {
	byTopic := make(map[string]int)
	for _, row := range sent {
		byTopic[row.Topic]++
	}
	for topic, n := range byTopic {
		r.s.metrics.Published(topic, n)
	}
}
