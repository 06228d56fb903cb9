package outbox

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/backoff"
	"github.com/commercekit/commercekit/internal/depfail"
	"github.com/commercekit/commercekit/internal/sqlutil"
)

// HandlerFunc applies a batch of events through tx, the transaction in which the Consumer
// also records them as processed: the handler's writes and that record commit together or
// not at all. Do every write through tx (on SQLite the pool may have a single connection).
// Events arrive in stream order and none of them has been applied by this consumer before.
// Return an error to have the batch rolled back and retried; wrap it with Permanent to
// dead-letter the event at once. A panic is taken for an error (ErrHandlerPanicked): the
// process goes on, and an event that keeps making the handler panic is dead-lettered.
type HandlerFunc func(ctx context.Context, tx bun.Tx, events []Event) error

// Consumer applies events to application state exactly once per consumer name: it is the
// deduplicating core behind both the Kafka consumer-group handler (saramaoutbox) and the
// in-process Dispatcher.
type Consumer struct {
	db     *bun.DB
	name   string
	handle HandlerFunc
	s      settings

	mu         sync.Mutex
	owed       map[string][]string // token → event IDs: leases a delivery could not give back (the database down), given back before the next leases are read
	leaseUntil time.Time           // deliveries lease their events until then (see leasing); zero: until the lease window after the next
	live       map[string]struct{} // tokens of this Consumer's deliveries under way: their leases are no crash

	// handling is held, shared, by every handler transaction of the Consumer, and alone by
	// that of a suspected event (see applyHeld), so that a crash under it is its doing.
	handling sync.RWMutex
}

// MaxConsumerNameLen bounds a consumer's name, which keys its processed-events records.
const MaxConsumerNameLen = 64

// NewConsumer returns a Consumer named name (its key in outbox_processed: give each
// independent application of the events its own name) that applies events with handle on
// db. A name ending with a space is refused: MySQL's collations ignore trailing spaces, so
// "c " would share the records of "c" there. Options: WithBatchSize (events per handler transaction, default 100), WithMaxAttempts
// (default 5), WithBackoff (between attempts, default 50ms..5s), WithDeadLetters (default:
// a DeadLetterTable on db), WithLeaseWindow (default 1 minute), WithClock, WithLogger,
// WithObserver.
func NewConsumer(db *bun.DB, name string, handle HandlerFunc, opts ...Option) (*Consumer, error) {
	switch {
	case db == nil || handle == nil:
		return nil, invalidConfig("NewConsumer needs a database and a handler")
	case name == "" || len(name) > MaxConsumerNameLen || !utf8.ValidString(name):
		return nil, invalidConfig("consumer name %q must be 1 to 64 bytes of UTF-8", name)
	case strings.HasSuffix(name, " "):
		return nil, invalidConfig("consumer name %q ends with a space, which MySQL ignores: it would share the records of %q",
			name, strings.TrimRight(name, " "))
	}
	s, err := newSettings(kindConsumer, opts)
	if err != nil {
		return nil, err
	}
	s.defaults(100, 0, 50*time.Millisecond, 5*time.Second)
	if s.deadLetters == nil {
		s.deadLetters = NewDeadLetterTable(db)
	}
	return &Consumer{db: db, name: name, handle: handle, s: s, owed: make(map[string][]string), live: make(map[string]struct{})}, nil
}

// Name returns the consumer's name.
func (c *Consumer) Name() string { return c.name }

// BatchSize returns how many events the consumer hands its handler at most at once.
func (c *Consumer) BatchSize() int { return c.s.batchSize }

// Apply applies events in one transaction and returns how many were new: it drops repeated
// IDs within the batch, asks outbox_processed which of the rest this consumer has applied
// already (one query for the whole batch), hands the others to the handler, records them
// (one multi-row insert) and commits. Running it again with the same events applies nothing
// twice. It does not retry a handler error; Deliver does. It runs alongside the
// Consumer's other handler transactions, but not while Deliver handles a suspected event
// alone (see Deliver): it waits for that one, and that one waits for it. Call it from
// outside the Consumer's handler, never from within.
func (c *Consumer) Apply(ctx context.Context, events []Event) (int, error) {
	return c.applyHeld(ctx, events, false, nil)
}

// applyHeld is apply holding c.handling: alone, waiting for the Consumer's other handler
// transactions to end and keeping new ones out meanwhile, for a suspected event (one with
// earlier, the tokens of its unfinished deliveries); shared otherwise. A Consumer
// delivering several streams at once (saramaoutbox runs a claim per partition on one
// Consumer) could not otherwise tell which of the events being handled when the process
// or the database died brought it down, and would count the crash against every one. The
// lease is taken once the lock is held: waiting is no delivery.
func (c *Consumer) applyHeld(ctx context.Context, events []Event, leased bool, earlier []string) (int, error) {
	if len(earlier) == 0 {
		if !c.handling.TryRLock() {
			c.s.logger.Info("outbox consumer: waiting for a suspected event, handled alone, to end",
				"consumer", c.name, "events", len(events))
			c.handling.RLock()
		}
		defer c.handling.RUnlock()
		return c.apply(ctx, events, leased, nil)
	}
	if !c.handling.TryLock() {
		c.s.logger.Info("outbox consumer: waiting for its other deliveries to end, to handle a suspected event alone",
			"consumer", c.name, "id", events[0].ID)
		c.handling.Lock()
	}
	defer c.handling.Unlock()
	return c.apply(ctx, events, true, earlier)
}

// apply applies events in one handler transaction, leased (see lease) or not; the
// transaction removes the leases of earlier, unfinished deliveries with its own. After a
// failure the Consumer leases again (LeaseAgain): the next may be the process or the
// database dying.
func (c *Consumer) apply(ctx context.Context, events []Event, leased bool, earlier []string) (n int, err error) {
	defer func() {
		if err != nil {
			c.LeaseAgain()
		}
	}()
	uniq := make([]Event, 0, len(events))
	seen := make(map[string]struct{}, len(events))
	for _, ev := range events {
		if _, dup := seen[ev.ID]; !dup {
			seen[ev.ID] = struct{}{}
			uniq = append(uniq, ev)
		}
	}
	if len(uniq) == 0 {
		return 0, nil
	}
	var tokens []string // the leases the handler's transaction removes
	token := ""
	if leased {
		token = uuid.NewString()
		tokens = append([]string{token}, earlier...)
		c.underWay(token, true)
		defer c.underWay(token, false)
		if err := c.lease(ctx, token, uniq); err != nil {
			return 0, err
		}
	}
	for race := 0; ; race++ {
		fresh, err := c.applyOnce(ctx, uniq, tokens)
		// A duplicate key on the processed record means another member applied some of these
		// events concurrently (a rebalance); our transaction was rolled back, and running it
		// again skips what the other applied. Each such race means one more of the events
		// applied, so there are fewer races than events (the other member may apply them one
		// by one, taking this delivery's leases for a crashed one's).
		if errors.Is(err, errConcurrentApply) && race < len(uniq) {
			continue
		}
		if err != nil {
			if leased && !c.crashedUnder(ctx, uniq, err) {
				c.release(ctx, token, uniq)
			}
			return 0, err
		}
		c.countApplied(events, fresh)
		return len(fresh), nil
	}
}

// leasing reports whether deliveries lease their events now, starting the window at the
// first delivery since the Consumer was made or LeaseAgain.
func (c *Consumer) leasing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.s.now()
	if c.leaseUntil.IsZero() {
		c.leaseUntil = now.Add(c.s.leaseWindow) // saturating: AlwaysLease never ends
	}
	return now.Before(c.leaseUntil)
}

// LeaseAgain has the Consumer's deliveries lease their events (see Deliver) for the lease
// window from its next delivery on, however late it comes. Deliver does so itself after a
// failed handler transaction (the next may be the process or the database dying under an
// event). Call it when the Consumer starts delivering a stream it was not delivering
// (saramaoutbox does at each claim of a partition): its first events may be what a member
// that died was handling.
func (c *Consumer) LeaseAgain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leaseUntil = time.Time{}
}

// underWay marks the delivery token as under way in this process, or no longer: unfinished
// does not count its leases, which are no crash.
func (c *Consumer) underWay(token string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		c.live[token] = struct{}{}
	} else {
		delete(c.live, token)
	}
}

// lease records, in a statement of its own committed before the handler runs, that the
// delivery token begins handling events: a row each in TableInflight. The handler's
// transaction removes them; a delivery that ends otherwise gives them back (release),
// unless the database went down under the handler (crashedUnder). When the statement
// fails it may have run all the same, its answer lost: the leases are owed, and given back
// (by token: nothing if they were never taken) before the next leases are read.
func (c *Consumer) lease(ctx context.Context, token string, events []Event) error {
	ids := eventIDs(events)
	now := c.s.now()
	rows := make([]inflightRow, len(ids))
	for i, id := range ids {
		rows[i] = inflightRow{Consumer: c.name, ID: id, Token: token, LeasedAt: now}
	}
	// In key order, as every other statement on the leases locks them: two members handed
	// the same events in different orders (a rebalance) deadlocked on MySQL. A deadlock
	// left (with an applying transaction's gap locks) rolled back the whole INSERT, which
	// is sent again.
	slices.SortFunc(rows, func(a, b inflightRow) int { return strings.Compare(a.ID, b.ID) })
	err := sqlutil.Retry(ctx, c.db, func(ctx context.Context) error {
		_, err := c.db.NewInsert().Model(&rows).Exec(ctx)
		return err
	})
	if err != nil {
		c.owe(token, ids)
		return ctxOr(ctx, fmt.Errorf("outbox: consumer %s: leasing events: %w", c.name, sqlutil.Unavailable(c.db, err)))
	}
	if c.s.metrics.on() {
		for topic, n := range perTopic(events) {
			c.s.metrics.Leased(c.name, topic, n)
		}
	}
	return nil
}

// unfinished returns, for each of events with any, the tokens of its leases: the
// deliveries that began handling it and never ended, but for this Consumer's under way. It
// first gives back the leases the Consumer owes, and fails if it cannot.
func (c *Consumer) unfinished(ctx context.Context, events []Event) (map[string][]string, error) {
	if err := c.payOwed(ctx); err != nil {
		return nil, err
	}
	var rows []inflightRow
	err := c.db.NewSelect().Model(&rows).Column("id", "token").
		Where("consumer = ?", c.name).Where("id IN (?)", bun.List(eventIDs(events))).Scan(ctx)
	if err != nil {
		return nil, ctxOr(ctx, fmt.Errorf("outbox: consumer %s: reading leases: %w", c.name, sqlutil.Unavailable(c.db, err)))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	tokens := make(map[string][]string, len(rows))
	for _, r := range rows {
		if _, ok := c.live[r.Token]; !ok {
			tokens[r.ID] = append(tokens[r.ID], r.Token)
		}
	}
	return tokens, nil
}

// maxOwedLeases bounds how many deliveries' leases a Consumer remembers owing: past it, it
// forgets them all, and each of their events is counted one crash it did not cause, as it
// is when the process stops owing them.
const maxOwedLeases = 10_000

// release gives back the leases of the delivery token, which ended without applying
// events and without the database going down under the handler: the process saw it end.
// When the database does not take it (it is down), the Consumer owes them.
func (c *Consumer) release(ctx context.Context, token string, events []Event) {
	ids := eventIDs(events)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := c.giveBack(wctx, token, ids); err != nil {
		c.s.logger.Warn("outbox consumer: could not give the leases of a failed delivery back; given back before the next are read",
			"consumer", c.name, "events", len(ids), "err", err)
		c.owe(token, ids)
	}
}

// releaseTimeout bounds giving a failed delivery's leases back, and removing a
// dead-lettered event's.
const releaseTimeout = 5 * time.Second

// giveBack deletes the leases of ids the delivery token took: exactly those, by primary
// key, however often it is repeated.
func (c *Consumer) giveBack(ctx context.Context, token string, ids []string) error {
	_, err := c.db.NewDelete().Table(TableInflight).
		Where("consumer = ?", c.name).Where("id IN (?)", bun.List(ids)).Where("token = ?", token).Exec(ctx)
	if err != nil {
		return fmt.Errorf("outbox: consumer %s: giving leases back: %w", c.name, sqlutil.Unavailable(c.db, err))
	}
	return nil
}

// owe remembers that the Consumer owes the leases of ids the delivery token took.
func (c *Consumer) owe(token string, ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.owed) >= maxOwedLeases {
		clear(c.owed)
	}
	c.owed[token] = ids
}

// payOwed gives back every lease the Consumer owes.
func (c *Consumer) payOwed(ctx context.Context) error {
	c.mu.Lock()
	var owed map[string][]string
	if len(c.owed) > 0 { // else nothing to copy at every read
		owed = maps.Clone(c.owed)
	}
	c.mu.Unlock()
	for token, ids := range owed {
		if err := c.giveBack(ctx, token, ids); err != nil {
			return ctxOr(ctx, err)
		}
		c.mu.Lock()
		delete(c.owed, token)
		c.mu.Unlock()
	}
	return nil
}

// applied reports whether this consumer has applied ev.
func (c *Consumer) applied(ctx context.Context, ev Event) (bool, error) {
	n, err := c.db.NewSelect().Table(TableProcessed).Where("consumer = ?", c.name).Where("id = ?", ev.ID).Count(ctx)
	if err != nil {
		return false, ctxOr(ctx, fmt.Errorf("outbox: consumer %s: reading processed events: %w", c.name, sqlutil.Unavailable(c.db, err)))
	}
	return n > 0, nil
}

// forget deletes every lease of ev, dead-lettered or about to be redriven: it starts again
// from nothing. Its error fails the delivery, which is delivered again.
func (c *Consumer) forget(ctx context.Context, ev Event) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	_, err := c.db.NewDelete().Table(TableInflight).Where("consumer = ?", c.name).Where("id = ?", ev.ID).Exec(wctx)
	if err != nil {
		return ctxOr(ctx, fmt.Errorf("outbox: consumer %s: removing the leases of event %s: %w", c.name, ev.ID, sqlutil.Unavailable(c.db, err)))
	}
	return nil
}

func eventIDs(events []Event) []string {
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.ID
	}
	return ids
}

var errConcurrentApply = errors.New("outbox: events applied concurrently by another member of the consumer")

// handlerError marks an error that came from the application's handler (as opposed to the
// consumer's own statements): only those count towards dead-lettering.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

func isHandlerError(err error) bool {
	var h *handlerError
	return errors.As(err, &h)
}

// applyOnce applies events in one transaction: it reads which of them this consumer has
// applied (one query), removes their leases of the deliveries tokens (this one's, and when
// alone the earlier unfinished ones), hands the fresh ones to the handler and records them
// as processed.
func (c *Consumer) applyOnce(ctx context.Context, events []Event, tokens []string) ([]Event, error) {
	ids := eventIDs(events)
	var fresh []Event
	err := sqlutil.InTx(ctx, c.db, func(ctx context.Context, tx bun.Tx) error {
		var done []string
		err := tx.NewSelect().Table(TableProcessed).Column("id").
			Where("consumer = ?", c.name).Where("id IN (?)", bun.List(ids)).Scan(ctx, &done)
		if err != nil {
			return fmt.Errorf("outbox: consumer %s: reading processed events: %w", c.name, err)
		}
		applied := make(map[string]struct{}, len(done))
		for _, id := range done {
			applied[id] = struct{}{}
		}
		fresh = fresh[:0]
		for _, ev := range events {
			if _, ok := applied[ev.ID]; !ok {
				fresh = append(fresh, ev)
			}
		}
		if len(tokens) > 0 {
			// By whole primary keys: no gap locks, no waiting on another delivery's leases.
			_, err := tx.NewDelete().Table(TableInflight).Where("consumer = ?", c.name).
				Where("id IN (?)", bun.List(ids)).Where("token IN (?)", bun.List(tokens)).Exec(ctx)
			if err != nil {
				return fmt.Errorf("outbox: consumer %s: removing leases: %w", c.name, err)
			}
		}
		if len(fresh) == 0 {
			return nil
		}
		if err := c.handleRecovering(ctx, tx, fresh); err != nil {
			if lost := connectionLost(ctx, tx, err); lost != nil {
				return &connectionLostError{err: fmt.Errorf("outbox: consumer %s: the database connection failed under the handler: %w", c.name, lost)}
			}
			return &handlerError{err: err}
		}
		now := c.s.now()
		rows := make([]processedRow, len(fresh))
		for i, ev := range fresh {
			rows[i] = processedRow{Consumer: c.name, ID: ev.ID, ProcessedAt: now}
		}
		if _, err := tx.NewInsert().Model(&rows).Exec(ctx); err != nil {
			if sqlutil.IsDuplicateKey(err) {
				return fmt.Errorf("%w: %w", errConcurrentApply, err)
			}
			return fmt.Errorf("outbox: consumer %s: recording processed events: %w", c.name, err)
		}
		return nil
	})
	return fresh, err
}

// maxPanicText bounds each of the texts a handler's panic carries into its error (and so
// into a dead letter's): the handler's stack, and the panic's value (which may hold a
// whole payload).
const maxPanicText = 8 << 10

// handleRecovering runs the handler, turning a panic into its failure (ErrHandlerPanicked,
// with the panic's value and the handler's stack): a poison event that makes the handler
// panic is retried and dead-lettered like one that fails it, its writes rolled back with
// the transaction, instead of taking the process down at each of its deliveries. A value
// that is an error is wrapped, and classified as if the handler had returned it (a lock
// wait timeout is contention, a lost connection the database's failure).
func (c *Consumer) handleRecovering(ctx context.Context, tx bun.Tx, events []Event) (err error) {
	defer func() {
		if v := recover(); v != nil {
			stack := cutText(string(debug.Stack()), maxPanicText)
			if e, ok := v.(error); ok { // panic(err): that error, as if returned (a lock wait is contention)
				err = fmt.Errorf("%w: %w\n%s", ErrHandlerPanicked, e, stack)
			} else {
				err = fmt.Errorf("%w: %s\n%s", ErrHandlerPanicked, cutText(fmt.Sprint(v), maxPanicText), stack)
			}
			c.s.logger.Error("outbox consumer: handler panicked", "consumer", c.name, "events", len(events), "err", err)
		}
	}()
	return c.handle(ctx, tx, events)
}

// connectionLost returns, when err (the handler's) may be the database failing and tx, the
// consumer's transaction the handler wrote through, no longer answers, err joined with the
// probe's error: the database failed, not the events, which must not count towards
// dead-lettering them. Else nil: the handler's own failure. The probe (SELECT 1) is sent
// only for an error that looks like a dependency failing (depfail.Is).
func connectionLost(ctx context.Context, tx bun.Tx, err error) error {
	if !depfail.Is(err) || ctx.Err() != nil {
		return nil
	}
	var one int
	perr := tx.QueryRowContext(ctx, "SELECT 1").Scan(&one)
	if perr == nil || !depfail.Is(perr) {
		return nil
	}
	return errors.Join(err, perr)
}

// connectionLostError marks the failure of a transaction whose connection failed under the
// handler (connectionLost).
type connectionLostError struct {
	err   error
	alone bool // the database answered on another connection (see crashedUnder)
}

func (e *connectionLostError) Error() string { return e.err.Error() }
func (e *connectionLostError) Unwrap() error { return e.err }

// maxConnectionLosses is how many times in a row Deliver lets one event's handling lose its
// database connection, the database answering on another each time, before it takes that
// for the event's fault (a statement the server answers by closing the connection, say) and
// dead-letters it: retried for ever, such a poison event would hold up every delivery.
// It also bounds the deliveries in a row at which the process or the whole database may die
// under one event's handling (its lease, TableInflight).
const maxConnectionLosses = 3

// crashedUnder reports whether the leases of events, whose delivery failed with err, are
// to stay: err is the database going down under their handling (a connectionLostError, the
// database not answering on another connection either: the event may have brought it
// down, as it may the process). A connectionLostError is marked with what the probe found
// (lostAlone).
func (c *Consumer) crashedUnder(ctx context.Context, events []Event, err error) bool {
	var lost *connectionLostError
	if !errors.As(err, &lost) || ctx.Err() != nil {
		return false
	}
	var one int
	lost.alone = c.db.QueryRowContext(ctx, "SELECT 1").Scan(&one) == nil
	if lost.alone {
		return false
	}
	c.s.logger.Warn("outbox consumer: the database went down under the handler; its events are handled one by one at their next delivery",
		"consumer", c.name, "events", len(events), "first", events[0].ID, "err", err)
	return true
}

// contended reports whether err, a failed Apply, is a lock conflict that outlived the
// transaction's retries (sqlutil.IsRetryable: a MySQL lock wait timeout, which InTx does
// not run again, a deadlock that kept recurring, a busy SQLite database), the handler's
// included, and the handler did not mark it Permanent: a lock held elsewhere (a hot row,
// a backup's global read lock), not the events' fault. Deliver returns it, to be
// delivered again later, rather than count it towards dead-lettering a healthy event.
func contended(err error) bool {
	return sqlutil.IsRetryable(err) && !isPermanent(err)
}

// perTopic counts events by topic.
func perTopic(events []Event) map[string]int {
	n := make(map[string]int)
	for _, ev := range events {
		n[ev.Topic]++
	}
	return n
}

// lostAlone reports whether err, a failure of the consumer's transaction, is its
// connection failing under the handler while the database still answered on another
// (crashedUnder probed it): what the event's handling may have caused, unlike the
// database failing.
func lostAlone(err error) bool {
	var lost *connectionLostError
	return errors.As(err, &lost) && lost.alone
}

// countApplied reports the fresh events as applied and the rest of all (repeats within
// the batch included) as duplicates.
func (c *Consumer) countApplied(all, fresh []Event) {
	applied, dups := perTopic(fresh), perTopic(all)
	for topic, n := range applied {
		dups[topic] -= n
	}
	for topic, n := range applied {
		c.s.metrics.Applied(c.name, topic, n)
	}
	for topic, n := range dups {
		if n > 0 {
			c.s.metrics.Duplicates(c.name, topic, n)
		}
	}
}

// Deliver applies events in batches of the batch size with Apply, and deals with failures:
//
//   - When the handler fails a batch, the consumer isolates the culprit by applying the
//     batch's events one at a time, in order. An event that keeps failing is retried with
//     exponential, jittered backoff up to MaxAttempts times (at once for a Permanent error)
//     and then sent to the dead letters with its error and attempt count; the events after
//     it flow on. (A consumer that needs strict per-key order can spot the gap: Seq.)
//   - A connection that failed under the handler while the database still answers on
//     another may be the event's doing (a statement the server answers by closing the
//     connection): the event is isolated like a failing one and tried again, and after
//     3 such losses in a row it goes to the dead letters. A single lost connection (a
//     network cut, a proxy restarting) costs one more try, not an attempt.
//   - A lock conflict that outlived the transaction's retries, the handler's included (a
//     MySQL lock wait timeout: a lock held elsewhere, a backup's global read lock), is
//     not the events' fault either: Deliver returns it, unless the handler wrapped it with
//     Permanent, and the batch comes again later.
//   - An event without a valid ID cannot be deduplicated and goes to the dead letters at once.
//   - An error of the consumer's own statements (the database is down, say) is not the
//     events' fault, nor is the handler's when the consumer's database connection failed
//     under it (its transaction no longer answers) and the database does not answer on
//     another either: Deliver returns it, and the caller delivers the batch again later;
//     what was applied meanwhile is skipped then. So does a failure to store a dead letter
//     (ErrDeadLetter), and a done ctx.
//   - The process or the database dying under the handler may still be the events' doing
//     (a payload that makes the handler overflow its stack or exhaust memory, a
//     statement hitting a server bug): before the handler runs, the delivery commits a
//     lease of each event (a row of TableInflight under its own token), which the
//     handler's transaction removes and a delivery ending otherwise deletes, so the leases
//     left are the deliveries that never ended, across restarts of the process and across
//     the members of a consumer group. Deliver reads them first (one query per batch): a
//     batch holding an event with any is applied one event at a time, such an event alone,
//     and an event under which the process or the database died at 3 deliveries in a row
//     is dead-lettered without being handled again (its leases removed: Redrive starts it
//     from nothing). A suspected event is handled alone: the Consumer's other deliveries
//     (concurrent Deliver calls) wait meanwhile, so that the next crash under it is its
//     doing, not that of an event of another stream being handled at the same time (the
//     members of a group in other processes are not held back, and another member
//     handling the same event at the same time counts as a crash; this Consumer's own
//     deliveries under way never do). A crash or an outage that merely
//     coincides with an event's handling once or twice costs it nothing but its batch.
//     Leasing costs, per batch, a read, a statement committed on its own (a durable
//     commit) and one in the handler's transaction: on MariaDB it takes the Kafka consumer
//     from 37k to 16k events/s at batches of 100 and from 9.6k to 3.8k at batches of 10
//     (saramaoutbox's BenchmarkConsumer, steady against leasing, -benchtime 20000x), and
//     the embedded mode from 20k to 13k events/s on SQLite (BenchmarkEmbedded). So
//     Deliver leases only for WithLeaseWindow (a minute by default) from the Consumer's
//     first delivery (after a start: the delivery a dead process left unfinished comes
//     first), from its first delivery after a failed handler transaction (the database
//     failing, the handler failing), however late it comes, and from its first after
//     LeaseAgain (saramaoutbox calls it at each claim: a partition a dead member was
//     delivering comes to another), and otherwise costs what it did without leases. The
//     price is one crash: an event killing a process long past its start, or crashing the
//     database under a Consumer that has had no failure for a minute, is counted from
//     its second crash, and dead-lettered after its fourth.
//
// Deliver returns nil when every event was applied, found applied before, or dead-lettered.
func (c *Consumer) Deliver(ctx context.Context, events []Event) error {
	for start := 0; start < len(events); start += c.s.batchSize {
		if err := c.deliverBatch(ctx, events[start:min(start+c.s.batchSize, len(events))]); err != nil {
			return err
		}
	}
	return nil
}

func (c *Consumer) deliverBatch(ctx context.Context, batch []Event) error {
	valid := make([]Event, 0, len(batch))
	for i, ev := range batch {
		if reason := checkDeliveredID(ev.ID); reason != "" {
			cause := &EventError{Index: i, ID: ev.ID, Field: "ID", Reason: reason, Err: ErrInvalidEvent}
			if err := c.deadLetter(ctx, ev, cause, 0); err != nil {
				return err
			}
			continue
		}
		valid = append(valid, ev)
	}
	if len(valid) == 0 {
		return nil
	}
	leased, earlier := c.leasing(), map[string][]string(nil)
	if leased {
		var err error
		if earlier, err = c.unfinished(ctx, valid); err != nil {
			c.LeaseAgain()
			return err
		}
	}
	switch {
	case len(earlier) > 0:
		c.s.logger.Info("outbox consumer: an earlier delivery of the batch never ended, applying its events one by one",
			"consumer", c.name, "events", len(valid), "suspected", len(earlier))
	case len(valid) > 1:
		_, err := c.applyHeld(ctx, valid, leased, nil)
		switch {
		case err == nil || ctx.Err() != nil:
			return ctxOr(ctx, err)
		case contended(err):
			return err
		case !isHandlerError(err) && !lostAlone(err):
			return err
		default:
			c.s.metrics.HandlerFailed(c.name, valid[0].Topic)
			c.s.logger.Info("outbox consumer: batch failed, applying its events one by one", "consumer", c.name, "events", len(valid), "err", err)
		}
	}
	for _, ev := range valid {
		if _, err := c.deliverOne(ctx, ev, leased, earlier[ev.ID]); err != nil {
			return err
		}
	}
	return nil
}

// deliverOne applies ev on its own, retrying a handler failure (up to MaxAttempts) and a
// lost connection with the database answering (up to maxConnectionLosses), and
// dead-letters it after the last. earlier are the tokens of its deliveries the process or
// the database died under, as unfinished read them: at maxConnectionLosses it is
// dead-lettered without being handled again (unless it was applied meanwhile: a delivery
// without leases); above none it is handled alone. leased says whether its deliveries
// lease it. deadLettered says it was dead-lettered.
func (c *Consumer) deliverOne(ctx context.Context, ev Event, leased bool, earlier []string) (deadLettered bool, err error) {
	if len(earlier) > 0 {
		c.s.metrics.Suspected(c.name, ev.Topic)
	}
	if crashes := len(earlier); crashes >= maxConnectionLosses {
		applied, err := c.applied(ctx, ev)
		switch {
		case err != nil:
			return false, err
		case applied:
			return false, c.forget(ctx, ev)
		}
		cause := fmt.Errorf("outbox: consumer %s: event %s: the process or the database died under its handling at %d deliveries in a row",
			c.name, ev.ID, crashes)
		return true, c.deadLetterOne(ctx, ev, cause, crashes)
	}
	var last error
	attempts, losses := 0, 0
	for attempts < c.s.maxAttempts && losses < maxConnectionLosses {
		_, err := c.applyHeld(ctx, []Event{ev}, leased, earlier)
		switch {
		case err == nil:
			return false, nil
		case ctx.Err() != nil:
			return false, ctxOr(ctx, err)
		case contended(err):
			return false, err
		case isHandlerError(err):
			// Not a success: only this delivery's lease is given back, and the crashes
			// counted against ev stand, or an event whose handling fails first and crashes
			// the database next, at every delivery, would have each crash forgotten.
			attempts++
			c.s.metrics.HandlerFailed(c.name, ev.Topic)
			if isPermanent(err) {
				return true, c.deadLetterOne(ctx, ev, err, attempts+losses)
			}
		case lostAlone(err):
			losses++
			c.s.logger.Warn("outbox consumer: the database connection failed under the handler", "consumer", c.name,
				"id", ev.ID, "losses", losses, "err", err)
		default: // the database down: under the handler, the lease stays and counts
			return false, err
		}
		last = err
		if attempts < c.s.maxAttempts && losses < maxConnectionLosses {
			if err := backoff.Sleep(ctx, backoff.Equal(attempts+losses, c.s.minBackoff, c.s.maxBackoff)); err != nil {
				return false, err
			}
		}
	}
	return true, c.deadLetterOne(ctx, ev, last, attempts+losses)
}

// deadLetterOne dead-letters ev, an event deliverOne gives up on, and then removes its
// leases; when it cannot, the delivery fails and both are done again at the next (a dead
// letter is stored again, not twice, in a DeadLetterTable).
func (c *Consumer) deadLetterOne(ctx context.Context, ev Event, cause error, attempts int) error {
	if err := c.deadLetter(ctx, ev, cause, attempts); err != nil {
		return err
	}
	return c.forget(ctx, ev)
}

// maxDeadLetterError bounds the text of a consumer's dead letter's error (DeadLetter.Error):
// a handler's error may carry a whole payload, and a letter too large for its sink (TEXT,
// 64 KiB, on MySQL) would fail Deliver at every delivery of the batch.
const maxDeadLetterError = 32 << 10

func (c *Consumer) deadLetter(ctx context.Context, ev Event, cause error, attempts int) error {
	dl := DeadLetter{Event: ev, Consumer: c.name, Error: cutText(cause.Error(), maxDeadLetterError), Attempts: attempts, At: c.s.now()}
	if err := c.s.deadLetters.DeadLetter(ctx, dl); err != nil {
		return ctxOr(ctx, fmt.Errorf("%w: consumer %s, event %s: %w", ErrDeadLetter, c.name, ev.ID, err))
	}
	c.s.metrics.DeadLettered(c.name, ev.Topic, 1)
	c.s.logger.Warn("outbox consumer: event dead-lettered", "consumer", c.name, "id", ev.ID,
		"topic", ev.Topic, "key", ev.Key, "seq", ev.Seq, "attempts", attempts, "err", cause)
	return nil
}

// cutText returns s cut to at most n bytes, without a broken character at the cut.
func cutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// checkDeliveredID returns why id cannot key a processed-event record, or "". A relay
// never sends such an ID: Add refuses it. A NUL byte is refused by bun's SQLite dialect,
// and MySQL's collations ignore trailing spaces, so "x " would be taken for "x": found
// among the processed events yet not matched, it was applied again, and its record's
// insert refused for ever.
func checkDeliveredID(id string) string {
	switch {
	case id == "":
		return "is missing"
	case len(id) > MaxIDLen || !utf8.ValidString(id):
		return "is longer than 64 bytes or not valid UTF-8"
	case hasControl(id):
		return "contains a control character"
	case strings.HasSuffix(id, " "):
		return "ends with a space"
	}
	return ""
}

// ctxOr returns ctx's error when ctx is done (so callers see context errors as they are),
// else err.
func ctxOr(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && err != nil {
		return ctxErr
	}
	return err
}
