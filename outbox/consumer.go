package outbox

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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

	mu      sync.Mutex
	crashed map[string]int // event ID → deliveries in a row, since it was last applied, the database went down under its handling

	// handling is held, shared, by every handler transaction of the Consumer, and alone by
	// that of a suspected event (see applyHeld), so that a crash under it is its doing.
	handling sync.RWMutex
}

// MaxConsumerNameLen bounds a consumer's name, which keys its processed-events records.
const MaxConsumerNameLen = 64

// NewConsumer returns a Consumer named name (its key in outbox_processed: give each
// independent application of the events its own name) that applies events with handle on
// db. Options: WithBatchSize (events per handler transaction, default 100), WithMaxAttempts
// (default 5), WithBackoff (between attempts, default 50ms..5s), WithDeadLetters (default:
// a DeadLetterTable on db), WithClock, WithLogger, WithObserver.
func NewConsumer(db *bun.DB, name string, handle HandlerFunc, opts ...Option) (*Consumer, error) {
	switch {
	case db == nil || handle == nil:
		return nil, invalidConfig("NewConsumer needs a database and a handler")
	case name == "" || len(name) > MaxConsumerNameLen || !utf8.ValidString(name):
		return nil, invalidConfig("consumer name %q must be 1 to 64 bytes of UTF-8", name)
	}
	s, err := newSettings(kindConsumer, opts)
	if err != nil {
		return nil, err
	}
	s.defaults(100, 0, 50*time.Millisecond, 5*time.Second)
	if s.deadLetters == nil {
		s.deadLetters = NewDeadLetterTable(db)
	}
	return &Consumer{db: db, name: name, handle: handle, s: s, crashed: make(map[string]int)}, nil
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
	return c.applyHeld(ctx, events, false)
}

// applyHeld is Apply holding c.handling: alone, waiting for the Consumer's other handler
// transactions to end and keeping new ones out meanwhile, when alone is true (a suspected
// event); shared otherwise. A Consumer delivering several streams at once (saramaoutbox
// runs a claim per partition on one Consumer) could not otherwise tell which of the
// events being handled when the database went down brought it down, and would count the
// crash against every one.
func (c *Consumer) applyHeld(ctx context.Context, events []Event, alone bool) (int, error) {
	if !alone {
		c.handling.RLock()
		defer c.handling.RUnlock()
		return c.apply(ctx, events)
	}
	if !c.handling.TryLock() {
		c.s.logger.Info("outbox consumer: waiting for its other deliveries to end, to handle a suspected event alone",
			"consumer", c.name, "id", events[0].ID)
		c.handling.Lock()
	}
	defer c.handling.Unlock()
	return c.apply(ctx, events)
}

func (c *Consumer) apply(ctx context.Context, events []Event) (int, error) {
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
	for race := 0; ; race++ {
		fresh, err := c.applyOnce(ctx, uniq)
		// A duplicate key on the processed record means another member applied some of these
		// events concurrently (a rebalance); our transaction was rolled back, and running it
		// again skips what the other applied.
		if errors.Is(err, errConcurrentApply) && race < 3 {
			continue
		}
		if err != nil {
			return 0, err
		}
		c.countApplied(events, fresh)
		return len(fresh), nil
	}
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

func (c *Consumer) applyOnce(ctx context.Context, events []Event) ([]Event, error) {
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.ID
	}
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
		if len(fresh) == 0 {
			return nil
		}
		if err := c.handleRecovering(ctx, tx, fresh); err != nil {
			if lost := connectionLost(ctx, tx, err); lost != nil {
				return &connectionLostError{fmt.Errorf("outbox: consumer %s: the database connection failed under the handler: %w", c.name, lost)}
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
type connectionLostError struct{ err error }

func (e *connectionLostError) Error() string { return e.err.Error() }
func (e *connectionLostError) Unwrap() error { return e.err }

// maxConnectionLosses is how many times in a row Deliver lets one event's handling lose its
// database connection, the database answering on another each time, before it takes that
// for the event's fault (a statement the server answers by closing the connection, say) and
// dead-letters it: retried for ever, such a poison event would hold up every delivery.
// It also bounds the deliveries in a row at which the whole database may go down under one
// event's handling (crashedUnder).
const maxConnectionLosses = 3

// maxCrashedEvents bounds how many events a Consumer remembers the database going down
// under (see crashedUnder): past it, it forgets them all, and their counts start again from
// nothing, so a poison event among them may bring the database down up to
// maxConnectionLosses more times before it is dead-lettered. (A single batch larger than the
// bound is remembered whole.)
const maxCrashedEvents = 10_000

// crashedUnder counts, when err is the database going down under the handling of events
// (a connectionLostError, the database not answering on another connection either), one
// crash against each of them. An event whose handling brings the whole server down looks,
// within one delivery, like an outage; counted across deliveries, it is told apart: its
// batch is isolated at its next delivery (suspected), and after maxConnectionLosses crashes
// in a row under it alone deliverOne dead-letters it without handling it again. alone says
// the events were handled holding c.handling alone (applyHeld): otherwise other handlings
// of the Consumer may have been in flight, and the crash only makes them suspected (one
// crash at most), to be handled alone next time.
func (c *Consumer) crashedUnder(events []Event, err error, alone bool) {
	var lost *connectionLostError
	if !errors.As(err, &lost) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.crashed)+len(events) > maxCrashedEvents {
		clear(c.crashed)
	}
	for _, ev := range events {
		if alone || c.crashed[ev.ID] == 0 {
			c.crashed[ev.ID]++
		}
	}
	c.s.logger.Warn("outbox consumer: the database went down under the handler; its events are handled one by one at their next delivery",
		"consumer", c.name, "events", len(events), "first", events[0].ID, "err", err)
}

// crashes returns how many deliveries in a row the database went down under the handling
// of the event id (crashedUnder).
func (c *Consumer) crashes(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.crashed[id]
}

// suspected reports whether the database went down under the handling of any of events at
// their last delivery.
func (c *Consumer) suspected(events []Event) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range events {
		if c.crashed[ev.ID] > 0 {
			return true
		}
	}
	return false
}

// handled forgets the crashes counted against the event id: it was applied (or found
// applied), or dead-lettered. Nothing else resets them: a handler error or a connection
// lost with the database answering is no success, and crashes counted on either side of
// one are still crashes in a row.
func (c *Consumer) handled(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.crashed, id)
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

// lostAlone reports whether err, a failure of the consumer's transaction, is its
// connection failing under the handler while the database still answers on another: what
// the event's handling may have caused, unlike the database failing.
func (c *Consumer) lostAlone(ctx context.Context, err error) bool {
	var lost *connectionLostError
	if !errors.As(err, &lost) || ctx.Err() != nil {
		return false
	}
	var one int
	return c.db.QueryRowContext(ctx, "SELECT 1").Scan(&one) == nil
}

// countApplied reports the fresh events as applied and the rest of all (repeats within
// the batch included) as duplicates.
func (c *Consumer) countApplied(all, fresh []Event) {
	applied, dups := make(map[string]int), make(map[string]int)
	for _, ev := range all {
		dups[ev.Topic]++
	}
	for _, ev := range fresh {
		applied[ev.Topic]++
		dups[ev.Topic]--
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
//   - The database going down under the handler may still be the events' doing (a
//     statement hitting a server bug, crashing it): the Consumer remembers those events,
//     applies them one at a time at their next delivery, and dead-letters an event under
//     which the database went down at 3 deliveries in a row without handling it again.
//     A suspected event is handled alone: the Consumer's other deliveries (concurrent
//     Deliver calls) wait meanwhile, so that the next crash under it is its doing, not
//     that of an event of another stream being handled at the same time. An outage that
//     merely coincides with an event's handling once or twice costs it nothing but its
//     batch.
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
	if len(valid) > 1 && !c.suspected(valid) {
		_, err := c.applyHeld(ctx, valid, false)
		switch {
		case err == nil || ctx.Err() != nil:
			return ctxOr(ctx, err)
		case contended(err):
			return err
		case !isHandlerError(err) && !c.lostAlone(ctx, err):
			c.crashedUnder(valid, err, false)
			return err
		}
		c.s.metrics.HandlerFailed(c.name, valid[0].Topic)
		c.s.logger.Info("outbox consumer: batch failed, applying its events one by one", "consumer", c.name, "events", len(valid), "err", err)
	}
	for _, ev := range valid {
		if _, err := c.deliverOne(ctx, ev); err != nil {
			return err
		}
	}
	return nil
}

// deliverOne applies ev alone, retrying a handler failure (up to MaxAttempts) and a lost
// connection with the database answering (up to maxConnectionLosses), and dead-letters it
// after the last; deadLettered says it did.
func (c *Consumer) deliverOne(ctx context.Context, ev Event) (deadLettered bool, err error) {
	if n := c.crashes(ev.ID); n >= maxConnectionLosses {
		cause := fmt.Errorf("outbox: consumer %s: the database went down under the handling of event %s at %d deliveries in a row", c.name, ev.ID, n)
		if err := c.deadLetterOne(ctx, ev, cause, n); err != nil {
			return false, err
		}
		return true, nil
	}
	var last error
	attempts, losses := 0, 0
	alone := c.suspected([]Event{ev})
	for attempts < c.s.maxAttempts && losses < maxConnectionLosses {
		_, err := c.applyHeld(ctx, []Event{ev}, alone)
		switch {
		case err == nil:
			c.handled(ev.ID)
			return false, nil
		case ctx.Err() != nil:
			return false, ctxOr(ctx, err)
		case contended(err):
			return false, err
		case isHandlerError(err):
			// Not a success: the crashes counted against ev stand (see handled), or an event
			// whose handling fails first and crashes the database next, at every delivery,
			// would have each crash forgotten at the next delivery.
			attempts++
			c.s.metrics.HandlerFailed(c.name, ev.Topic)
			if isPermanent(err) {
				return true, c.deadLetterOne(ctx, ev, err, attempts+losses)
			}
		case c.lostAlone(ctx, err):
			losses++
			c.s.logger.Warn("outbox consumer: the database connection failed under the handler", "consumer", c.name,
				"id", ev.ID, "losses", losses, "err", err)
		default:
			c.crashedUnder([]Event{ev}, err, alone)
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

// deadLetterOne dead-letters ev, an event deliverOne gives up on, and then forgets the
// crashes counted against it.
func (c *Consumer) deadLetterOne(ctx context.Context, ev Event, cause error, attempts int) error {
	if err := c.deadLetter(ctx, ev, cause, attempts); err != nil {
		return err
	}
	c.handled(ev.ID)
	return nil
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

// checkDeliveredID returns why id cannot key a processed-event record, or "".
func checkDeliveredID(id string) string {
	switch {
	case id == "":
		return "is missing"
	case len(id) > MaxIDLen || !utf8.ValidString(id):
		return "is longer than 64 bytes or not valid UTF-8"
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
