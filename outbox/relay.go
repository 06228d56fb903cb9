package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
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
	mu   sync.Mutex // one round at a time per Relay picks and publishes
	wake chan struct{}
}

// DefaultRelayBatchSize is the Relay's batch size when WithBatchSize does not set one.
const DefaultRelayBatchSize = 500

// NewRelay returns a Relay that reads the outbox on db and hands events to pub. Options:
// WithBatchSize (events per round, default DefaultRelayBatchSize), WithInterval (idle
// poll, default 1s), WithBackoff (after a failed round, default 100ms..30s), WithClock,
// WithLogger, WithObserver.
//
// On MySQL the relay keeps a transaction open while pub publishes, and Run lets the previous
// round commit while the next one publishes, so db's pool needs two connections for it
// besides those the rest of the program (and, with a Dispatcher, the consumers) use.
func NewRelay(db *bun.DB, pub Publisher, opts ...Option) (*Relay, error) {
	if db == nil || pub == nil {
		return nil, invalidConfig("NewRelay needs a database and a publisher")
	}
	s, err := newSettings(kindRelay, opts)
	if err != nil {
		return nil, err
	}
	s.defaults(DefaultRelayBatchSize, time.Second, 100*time.Millisecond, 30*time.Second)
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
// it may (see the package documentation on order), marks them sent and sets aside those the
// publisher can never take. It returns how many it published and marked. Tests and
// one-shot jobs call it; services call Run.
func (r *Relay) RelayOnce(ctx context.Context) (int, error) {
	res, err := r.round(ctx)
	return res.published, err
}

// Run relays until ctx is done, then returns nil. While the outbox holds a full batch it
// runs rounds back to back; when it is empty it waits WithInterval or until Notify. After a
// failed round (broker down, database error) it pauses with exponential, jittered backoff
// and tries again, so nothing is lost and nothing overtakes: unsent events stay in the
// outbox until a round publishes them. An event the publisher can never take does not
// count as a failure: it is set aside and the others go on at once.
//
// Cancelling ctx is a graceful stop: what the publisher already accepted is still marked
// sent (given up to 10 seconds past the cancellation) before Run returns, so a restarted
// relay does not publish it again.
func (r *Relay) Run(ctx context.Context) error {
	failures := 0
	for {
		res, err := r.round(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait, wakeable := r.s.interval, true
		switch {
		case err != nil:
			failures++
			wait, wakeable = backoff.Equal(failures, r.s.minBackoff, r.s.maxBackoff), false
			r.s.logger.Warn("outbox relay round failed", "err", err, "failures", failures, "pause", wait)
		case res.dead > 0 || res.full && res.published > 0:
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

// Lag returns the age of the oldest event waiting to be published, or 0 when none is.
// Dead letters do not count; events waiting behind one in their stream do.
func (r *Relay) Lag(ctx context.Context) (time.Duration, error) {
	var created []time.Time
	err := r.db.NewSelect().Table(TableEvents).Column("created_at").
		Where("sent_at IS NULL AND dead_at IS NULL").OrderExpr("pos").Limit(1).Scan(ctx, &created)
	if err != nil {
		return 0, fmt.Errorf("outbox: relay lag: %w", sqlutil.Unavailable(r.db, err))
	}
	if len(created) == 0 {
		return 0, nil
	}
	return max(r.s.now().Sub(created[0]), 0), nil
}

// roundResult says what a round did: events published and set aside, and whether the
// batch was full (so more may be waiting).
type roundResult struct {
	published, dead int
	full            bool
}

// round runs one round to its end (RelayOnce, and each of Run's).
func (r *Relay) round(ctx context.Context) (roundResult, error) {
	res, finish, err := r.start(ctx)
	if finish != nil {
		if commitErr := finish(); commitErr != nil {
			res.published, res.dead = 0, 0
			err = errors.Join(err, commitErr)
		}
	}
	r.reportLag(ctx)
	return res, err
}

// start runs a round up to publishing. On MySQL it returns finish, which marks the batch
// and commits; on SQLite the round is complete. res counts what finish marks.
func (r *Relay) start(ctx context.Context) (res roundResult, finish func() error, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sqlutil.IsSQLite(r.db) {
		res, err = r.roundSQLite(ctx)
		return res, nil, err
	}
	return r.roundLocking(ctx)
}

// finishTimeout bounds the publishing, marking and commit of a batch once the round's
// context is cancelled.
const finishTimeout = 10 * time.Second

// finishing returns the context that publishes a batch and marks it: ctx without its
// cancellation, so a shutdown arriving while the publisher takes the batch or while the
// round commits still records what went out (instead of publishing it again after the
// restart); it ends finishTimeout after ctx does.
func finishing(ctx context.Context) (context.Context, context.CancelFunc) {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(finishTimeout, cancel)
		context.AfterFunc(fctx, func() { t.Stop() })
	})
	return fctx, func() { stop(); cancel() }
}

// reportLag hands the lag to the Observer, if any.
func (r *Relay) reportLag(ctx context.Context) {
	if r.s.metrics.on() && ctx.Err() == nil {
		if lag, err := r.Lag(ctx); err == nil {
			r.s.metrics.RelayLag(lag)
		}
	}
}

// roundLocking is a round on MySQL/MariaDB. In one READ COMMITTED transaction it locks a
// batch of unsent rows with FOR UPDATE SKIP LOCKED (rows another relay holds, and rows of
// transactions not yet committed, are skipped; READ COMMITTED takes no gap locks, so writers
// adding events are never blocked), keeps of each stream only the run that starts at the
// stream's first unsent event, publishes those, and returns finish, which marks them sent
// (or dead) and commits. A crash before the commit releases the locks and leaves the rows
// unsent: they are published again.
func (r *Relay) roundLocking(ctx context.Context) (res roundResult, finish func() error, err error) {
	// Not ctx: database/sql would roll the transaction back the moment ctx is cancelled,
	// and a shutdown would then leave what was published unmarked. Every path below ends
	// it with Rollback or Commit.
	tx, err := r.db.BeginTx(context.WithoutCancel(ctx), &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return res, nil, fmt.Errorf("outbox: relay: %w", err)
	}
	rows, err := r.pick(ctx, tx, func(q *bun.SelectQuery) *bun.SelectQuery { return q.For("UPDATE SKIP LOCKED") })
	res.full = len(rows) == r.s.batchSize
	var heads map[Stream]int64
	if err == nil && len(rows) > 0 {
		heads, err = unsentHeads(ctx, tx, rows)
	}
	if err != nil || len(rows) == 0 {
		_ = tx.Rollback()
		return res, nil, err
	}
	sent, dead, pubErr := r.publish(ctx, publishable(rows, heads))
	res.published, res.dead = len(sent), len(dead)
	return res, func() error {
		defer func() { _ = tx.Rollback() }()
		ctx, cancel := finishing(ctx)
		defer cancel()
		if err := r.mark(ctx, tx, sent, dead); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("outbox: relay: committing: %w", err)
		}
		r.report(sent, dead)
		return nil
	}, pubErr
}

// roundSQLite is a round on SQLite, whose single writer rules out a second relay (run one
// per database): it reads a batch of unsent rows, publishes them without holding a
// transaction (so in-process consumers can write meanwhile) and marks them sent (or dead).
// The batch is the oldest unsent rows that no dead letter blocks, so each stream's part
// starts at its first unsent event.
func (r *Relay) roundSQLite(ctx context.Context) (roundResult, error) {
	rows, err := r.pick(ctx, r.db, func(q *bun.SelectQuery) *bun.SelectQuery { return q })
	res := roundResult{full: len(rows) == r.s.batchSize}
	if err != nil || len(rows) == 0 {
		return res, err
	}
	sent, dead, pubErr := r.publish(ctx, publishable(rows, firstSeqs(rows)))
	mctx, cancel := finishing(ctx)
	defer cancel()
	if err := r.mark(mctx, r.db, sent, dead); err != nil {
		return res, errors.Join(pubErr, err)
	}
	r.report(sent, dead)
	res.published, res.dead = len(sent), len(dead)
	return res, pubErr
}

// pick reads the batch: the oldest events waiting to be published, leaving out the
// dead letters and every event behind one in its stream (they wait for Redrive or Skip, and
// must not crowd the batch out), through lock (FOR UPDATE SKIP LOCKED on MySQL).
func (r *Relay) pick(ctx context.Context, db bun.IDB, lock func(*bun.SelectQuery) *bun.SelectQuery) ([]eventRow, error) {
	var blocked []struct {
		Topic string `bun:"topic"`
		Key   string `bun:"aggregate_key"`
		Seq   int64  `bun:"seq"`
	}
	err := db.NewSelect().Table(TableEvents).ColumnExpr("topic, aggregate_key, MIN(seq) AS seq").
		Where("dead_at IS NOT NULL AND sent_at IS NULL").GroupExpr("topic, aggregate_key").Scan(ctx, &blocked)
	if err != nil {
		return nil, fmt.Errorf("outbox: relay: reading dead letters: %w", err)
	}
	var rows []eventRow
	q := db.NewSelect().Model(&rows).Where("sent_at IS NULL AND dead_at IS NULL")
	if len(blocked) > 0 {
		cond := make([]string, len(blocked))
		args := make([]any, 0, 3*len(blocked))
		for i, b := range blocked {
			cond[i] = "(topic = ? AND aggregate_key = ? AND seq > ?)"
			args = append(args, b.Topic, b.Key, b.Seq)
		}
		q = q.Where("NOT ("+strings.Join(cond, " OR ")+")", args...)
	}
	if err := lock(q.OrderExpr("pos").Limit(int64(r.s.batchSize))).Scan(ctx); err != nil {
		return nil, fmt.Errorf("outbox: relay: picking events: %w", err)
	}
	return rows, nil
}

// unsentHeads returns, for each stream of rows, the sequence number of its first unsent
// event as committed now (READ COMMITTED reads the latest commit), including events that
// another relay holds locked and dead letters (nothing after one may go).
//
// rows are the batch in position order, so it only needs to look before the batch's last
// position: within a stream, position order is sequence order, and every unsent row
// before that position is either in the batch or one the pick passed over (locked
// by another relay, a dead letter or behind one). One range scan of the sent_at index over
// the unsent rows up to that position finds those, however many sent events the table
// keeps.
func unsentHeads(ctx context.Context, tx bun.Tx, rows []eventRow) (map[Stream]int64, error) {
	heads := firstSeqs(rows)
	pos := make([]int64, len(rows))
	for i, row := range rows {
		pos[i] = row.Pos
	}
	var passed []struct {
		Topic string `bun:"topic"`
		Key   string `bun:"aggregate_key"`
		Seq   int64  `bun:"seq"`
	}
	err := tx.NewSelect().Table(TableEvents).ColumnExpr("topic, aggregate_key, MIN(seq) AS seq").
		Where("sent_at IS NULL AND pos < ? AND pos NOT IN (?)", rows[len(rows)-1].Pos, bun.List(pos)).
		GroupExpr("topic, aggregate_key").Scan(ctx, &passed)
	if err != nil {
		return nil, fmt.Errorf("outbox: relay: reading stream heads: %w", err)
	}
	for _, p := range passed {
		st := Stream{Topic: p.Topic, Key: p.Key}
		if h, ok := heads[st]; ok && p.Seq < h {
			heads[st] = p.Seq
		}
	}
	return heads, nil
}

// firstSeqs returns the lowest sequence number of each stream of rows.
func firstSeqs(rows []eventRow) map[Stream]int64 {
	heads := make(map[Stream]int64)
	for _, row := range rows {
		if h, ok := heads[row.stream()]; !ok || row.Seq < h {
			heads[row.stream()] = row.Seq
		}
	}
	return heads
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

// publish hands rows to the publisher and returns those accepted and those set aside as
// dead letters (with their reason). Within a stream nothing counts as sent after an event
// that is not.
//
// When the publisher refuses an event for good (a Permanent cause in a *PublishError), the
// rest of the batch may have failed with it (a transactional publisher aborts everything),
// and the refusal itself may be collateral (a broker rejects a whole partition batch for
// one oversized message). So the relay publishes the batch again up to each stream's
// refused event, then each refused event alone, now that everything before it is out, and
// sets aside only those refused on their own. Events after a refused one wait for the
// next round (or, behind a dead letter, for Redrive or Skip).
func (r *Relay) publish(ctx context.Context, rows []eventRow) (sent, dead []eventRow, err error) {
	sent, refused, err := r.attempt(ctx, rows)
	if len(refused) == 0 {
		return sent, nil, err
	}
	refusedAt := make(map[Stream]int64, len(refused))
	for _, row := range refused {
		if seq, ok := refusedAt[row.stream()]; !ok || row.Seq < seq {
			refusedAt[row.stream()] = row.Seq
		}
	}
	accepted := make(map[int64]bool, len(rows))
	for _, row := range sent {
		accepted[row.Pos] = true
	}
	var again []eventRow
	for _, row := range rows {
		if seq, ok := refusedAt[row.stream()]; !accepted[row.Pos] && (!ok || row.Seq < seq) {
			again = append(again, row)
		}
	}
	more, _, err := r.attempt(ctx, again)
	for _, row := range more {
		accepted[row.Pos] = true
	}
	sent = append(sent, more...)
	for _, row := range refused {
		if !ready(row, rows, accepted) {
			continue // what comes before it failed (err says why): next round
		}
		alone, still, aloneErr := r.attempt(ctx, []eventRow{row})
		sent = append(sent, alone...)
		if len(still) == 1 {
			dead = append(dead, still[0])
		} else if aloneErr != nil {
			err = errors.Join(err, aloneErr)
		}
	}
	return sent, dead, err
}

// ready reports whether every row of rows before row in its stream is accepted.
func ready(row eventRow, rows []eventRow, accepted map[int64]bool) bool {
	for _, r := range rows {
		if r.stream() == row.stream() && r.Seq < row.Seq && !accepted[r.Pos] {
			return false
		}
	}
	return true
}

// attempt publishes rows once and returns those accepted (each stream cut at its first
// failure) and, per stream, the first event the publisher refused for good and the first
// whose stored headers do not decode (refused without being published), with their reason.
func (r *Relay) attempt(ctx context.Context, rows []eventRow) (sent, refused []eventRow, err error) {
	events := make([]Event, 0, len(rows))
	kept := make([]eventRow, 0, len(rows))
	broken := make(map[Stream]bool)
	for _, row := range rows {
		if broken[row.stream()] {
			continue
		}
		ev, decodeErr := row.event()
		if decodeErr != nil {
			broken[row.stream()] = true
			refused = append(refused, row.withReason(decodeErr))
			continue
		}
		kept, events = append(kept, row), append(events, ev)
	}
	if len(kept) == 0 {
		return nil, refused, nil
	}
	// The publisher gets the time Run promises past a shutdown to learn whether the broker
	// took the batch (a Kafka transaction in flight commits all the same): one that gave up
	// at the cancellation would leave the batch unmarked, published again after a restart.
	pctx, cancel := finishing(ctx)
	pubErr := r.pub.Publish(pctx, events)
	cancel()
	if pubErr == nil {
		return kept, refused, nil
	}
	var pe *PublishError
	if errors.As(pubErr, &pe) {
		cut, hasRefused := make(map[Stream]bool), make(map[Stream]bool)
		for i, ev := range events {
			cause, failed := pe.Failed[ev.ID]
			st := ev.Stream()
			switch {
			case !failed && !cut[st]:
				sent = append(sent, kept[i])
			case failed && isPermanent(cause) && !hasRefused[st]:
				hasRefused[st] = true
				refused = append(refused, kept[i].withReason(cause))
				fallthrough
			default:
				cut[st] = true
			}
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
	return sent, refused, fmt.Errorf("outbox: relay: %w", pubErr)
}

// maxReasonLen bounds the reason stored with a dead letter.
const maxReasonLen = 2000

// withReason returns the row marked dead now for err.
func (r eventRow) withReason(err error) eventRow {
	reason := cutText(err.Error(), maxReasonLen)
	r.Reason = &reason
	return r
}

// mark records the outcome of a round: sent rows get sent_at, dead ones dead_at and their
// reason.
func (r *Relay) mark(ctx context.Context, db bun.IDB, sent, dead []eventRow) error {
	now := r.s.now()
	if len(sent) > 0 {
		pos := make([]int64, len(sent))
		for i, row := range sent {
			pos[i] = row.Pos
		}
		_, err := db.NewUpdate().Table(TableEvents).Set("sent_at = ?", now).Where("pos IN (?)", bun.List(pos)).Exec(ctx)
		if err != nil {
			return fmt.Errorf("outbox: relay: marking events sent: %w", err)
		}
	}
	for _, row := range dead {
		_, err := db.NewUpdate().Table(TableEvents).Set("dead_at = ?, dead_reason = ?", now, *row.Reason).
			Where("pos = ?", row.Pos).Exec(ctx)
		if err != nil {
			return fmt.Errorf("outbox: relay: setting event %s aside: %w", row.ID, err)
		}
	}
	return nil
}

// report counts what a round did, once it is committed, and logs each dead letter.
func (r *Relay) report(sent, dead []eventRow) {
	byTopic := make(map[string]int)
	for _, row := range sent {
		byTopic[row.Topic]++
	}
	for topic, n := range byTopic {
		r.s.metrics.Published(topic, n)
	}
	clear(byTopic)
	for _, row := range dead {
		byTopic[row.Topic]++
		r.s.logger.Error("outbox relay set aside an event the publisher can never take; later events of its stream wait until Relay.Redrive or Relay.Skip",
			"id", row.ID, "topic", row.Topic, "key", row.Key, "seq", row.Seq, "reason", *row.Reason)
	}
	for topic, n := range byTopic {
		r.s.metrics.RelayDeadLettered(topic, n)
	}
}
