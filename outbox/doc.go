// Package outbox is a transactional outbox: events written in the same database
// transaction as the business change they describe, relayed to Kafka (subpackage
// saramaoutbox) or to in-process consumers (Dispatcher), applied exactly once per consumer,
// and cleaned up when old.
//
//	business tx ──Add──▶ outbox_events ──Relay──▶ Publisher ──▶ Kafka ──▶ saramaoutbox.ConsumerHandler ─┐
//	                                                  └──▶ Dispatcher (embedded) ───────────────────────┤
//	                                                                                    Consumer: dedup + handler in one tx
//
// # Writing
//
// Add (or Writer.Add) takes a bun.IDB: pass the bun.Tx of the business change and the
// events commit or roll back with it; the relay sees nothing before the commit. Each event
// gets a time-ordered UUIDv7 ID (or keeps a caller-supplied one, which makes Add
// idempotent while the event is in the outbox: ErrDuplicateEvent; see Writer.Add for after
// the Cleaner deleted it), a creation time, and a sequence number in its stream
// (Topic, Key) — Key being the aggregate ID. The numbers come from a per-stream row in
// outbox_streams that Add increments in the caller's transaction: the row lock serialises
// concurrent writers to one aggregate (the second waits for the first to finish), and a
// rollback undoes the increment, so the committed events of a stream are numbered 1, 2, 3,
// ... with no gap, and commit in that order. A consumer can therefore detect a missing
// event. Add touches only the stream rows of its own events, by primary key (one upsert
// per stream, in sorted order), so writers of unrelated aggregates never wait on each
// other inside their business transactions. Invalid events fail with ErrInvalidEvent (an
// *EventError names the field) and nothing is written.
//
// An event larger than the writer's limit fails with ErrEventTooLarge before anything is
// written. Event.Size is the event as a Kafka record counts it, less the relay's own
// headers; the limit is WithMaxEventBytes, by default DefaultMaxEventBytes (1,000,000),
// which is what saramaoutbox.ProducerConfig's producer takes. Give a writer in front of
// another producer configuration saramaoutbox.MaxEventBytes of it.
//
// # Relaying
//
// A Relay picks unsent rows (sent_at IS NULL, and not set aside: see Dead letters of the
// relay) oldest first, publishes them and marks them sent. It never keeps a high-water-mark cursor: an event whose transaction commits after a
// newer one was already published is simply an unsent row and goes out in the next round.
//
// On MySQL/MariaDB (MariaDB 10.6+, MySQL 8) several relays may run at once. A round is one
// READ COMMITTED transaction that locks a batch of unsent rows with SELECT ... FOR UPDATE
// SKIP LOCKED, so relays split the backlog instead of publishing the same rows; rows of
// transactions not yet committed are skipped too, and READ COMMITTED takes no gap locks, so
// the relay never blocks writers. Per-key order needs one more step, because SKIP LOCKED
// alone would let relay B take seq 6 of a stream while relay A holds seq 1..5: after
// locking, the relay reads each stream's first unsent sequence number as committed now
// (events relay A holds are still unsent there) and publishes of each stream only the run
// that starts at that head and continues without a gap in its batch. Everything else in
// its batch it leaves for a later round. So seq n+1 is never published while seq n is
// unsent or held by another relay. Progress is guaranteed: the oldest unsent event (by
// insertion order, which within a stream is sequence order) is always a stream head, and
// whichever relay locks it publishes it. The lock is released by the commit that marks the
// rows sent, after the publisher accepted them; a relay that dies before that commit
// releases its locks and its rows are published again — a duplicate with the same event
// ID, never a loss. Reading the heads costs one range scan over the unsent rows before the
// batch's last position, whatever the number of sent events the table keeps.
//
// While the outbox holds full batches (500 events by default, DefaultRelayBatchSize), Run
// starts the next round as soon as one has committed, without waiting for its interval;
// rounds of one relay never overlap (see the end of this comment for why).
//
// On SQLite the database has a single writer, which makes concurrent relays moot: run one
// relay per database. A round there reads a batch without holding a transaction (so
// in-process consumers can write meanwhile), publishes it and marks it sent in one
// statement; a crash in between again means a duplicate, not a loss.
//
// When the publisher fails, the relay marks nothing that failed and nothing after a failed
// event in its stream (a *PublishError says which events failed; any other error fails the
// batch), and Run backs off exponentially with jitter before the next round. The unsent
// events stay in the outbox; nothing is lost and nothing overtakes. RelayOnce runs one
// round (tests, one-shot jobs); Run loops until its context is cancelled, and Notify wakes
// it early after a commit. A cancellation stops it gracefully: what the publisher already
// took is still marked sent before Run returns, so a restart does not publish it again.
//
// # Dead letters of the relay
//
// An event the publisher can never take (larger than the broker or producer accepts, an
// invalid topic: the Publisher says so with a Permanent cause in its *PublishError; or a
// row whose stored headers no longer decode) must not stall the relay. The relay
// publishes the rest of the batch again without it, then tries it alone (a broker refuses
// a whole partition batch for one oversized message, so the refusal may have been
// collateral); refused again, it is set aside in outbox_events itself: dead_at and
// dead_reason are set, sent_at stays NULL. The relay logs it at ERROR level and reports it
// (a "relay_dead_lettered" Event to the Observer). Every other stream keeps flowing; the
// later events of its own stream wait behind it (the relay's pick leaves them out, so they never crowd a
// batch), so per-key order is never broken. An operator lists the dead letters with
// Relay.DeadLetters (Relay.DeadLetterSummaries: without their payloads, for a listing)
// and resolves each: Relay.Redrive puts it back in line once the cause
// is fixed (published in its place, then the events that waited; refused again, it is set
// aside again), Relay.Skip gives up on it (never published; consumers see a gap at its
// sequence number; the row keeps its reason and is cleaned with the sent events). Both
// are idempotent, however late they are sent again: each resolution is kept for good in
// outbox_relay_resolutions, so the same one sent again after its answer was lost is done
// already, and the other one is refused (ErrResolvedOtherwise). The lag
// leaves dead letters out but counts the events waiting behind them.
//
// # Consuming
//
// A Consumer applies batches (default up to 100 events, as in seed 003) through a
// HandlerFunc that receives the transaction in which the Consumer also records the events
// in outbox_processed: in one transaction it drops repeats within the batch, asks which IDs
// this consumer already applied with one set-based query (SELECT id FROM outbox_processed
// WHERE consumer = ? AND id IN (...)), hands the rest to the handler and records them with
// one multi-row insert. Effects and record commit together, so a duplicate delivery (relay
// crash, consumer rebalance) is applied exactly once. Two members applying the same event
// concurrently collide on the processed record's primary key; the loser rolls back and
// finds it applied.
//
// Deliver adds the failure policy: when the handler fails a batch, the events are applied
// one at a time to isolate the culprit; a failing event is retried with backoff up to
// WithMaxAttempts (at once to the dead letters for a Permanent error) and then stored as a
// dead letter with its error and attempt count, and the events after it flow on. A
// handler that panics has failed (ErrHandlerPanicked, with the panic's value and stack):
// the process goes on, and a poison event that makes it panic each time is dead-lettered
// like one that makes it fail. Errors of
// the consumer's own statements (database down), and the handler's when its connection
// failed and the database does not answer on another either, are not the events' fault:
// Deliver returns them and the batch comes again later; so does a lock conflict that
// outlived the transaction's retries, the handler's included (a lock wait timeout: a lock
// held elsewhere is no fault of the events). A connection that fails under the
// handler while the database answers may be the event's doing (a poison event): it is
// isolated and retried, and dead-lettered after 3 such losses in a row. So may a process
// or a database that dies under the handler (a payload that overflows the handler's stack
// or exhausts memory, which no recover catches; a statement hitting a server bug): before
// the handler runs, Deliver commits a lease of each event (a row of outbox_inflight per
// delivery) that the handler's transaction removes and a delivery ending otherwise
// deletes, so the leases left count, in the database, across restarts and group members,
// the deliveries that never ended; Deliver reads them before it leases (per batch: a
// read, a statement committed on its own and one in the handler's transaction), for a
// minute from the Consumer's first delivery, from its first after a failed handler
// transaction and from the first of each Kafka claim only, so that a healthy stream costs
// nothing more (an event killing a process long past its start is counted from its second
// crash). A batch
// holding such an event is applied one event at a time, a suspected event alone, the
// Consumer's other deliveries (concurrent Deliver calls, one per partition with
// saramaoutbox) waiting meanwhile, so
// that a crash under it is not the doing of another event the same Consumer was handling
// (other processes, consumers and programs on the database are still a coincidence it
// takes for a crash: the reason for 3); an event under which the process or the database
// died at 3 deliveries in a row is dead-lettered without being handled again. Dead letters go to a
// DeadLetterSink: by default the outbox_dead_letters table, which Consumer.Redrive re-applies once the cause is fixed, or
// Consumer.Skip gives up on for good (the event recorded as processed, so that the broker
// delivering it again does not apply it); a Kafka dead-letter topic with
// saramaoutbox.DeadLetterQueue and saramaoutbox.Redrive.
// A dead-lettered event leaves a gap in its stream for that consumer, visible through Seq.
//
// A Kafka topic takes messages from any producer, not only the relay, so a consumer trusts
// no field of an event. One whose ID cannot key a processed record (missing, longer than
// 64 bytes, not UTF-8, holding a control character, ending with a space: a relay never
// sends one) is dead-lettered at once, unhandled. The table stores what it cannot take as
// it came (a NUL byte, invalid UTF-8, a key longer than its column, a creation time past
// year 9999, a letter too large for one statement) altered, under an ID derived from the
// event, and says how in DeadLetter.Altered; Redrive leaves such letters to the operator
// (DeadLetterTable.Remove, once resolved).
// So a hostile message costs a dead letter, never the stream behind it.
//
// # Embedded mode
//
// Without Kafka, a Dispatcher is the relay's Publisher: it hands each topic's events to
// the Consumers subscribed to it, through the same relay (same order, same crash
// behaviour) and the same dedup, retries and dead letters. One binary then works without a
// broker, on SQLite or MySQL. Events of a topic nobody subscribes to are dropped. On MySQL
// the relay holds a connection while consumers write through others: give the pool at
// least two.
//
// # Cleanup and observability
//
// A Cleaner (the outbox-cleanup job of seed 000) deletes sent events older than the
// retention (default 7 days), optionally processed records older than their own
// retention (but not the record of an event still in its consumer's DeadLetterTable,
// which tells a late Redrive that the event was applied, nor that of a skipped one), in
// bounded batches; it never
// deletes an unsent event. CleanOnce runs one pass;
// Run loops. The outbox_streams rows (one small row per aggregate) are kept: they carry the
// sequence numbers on.
//
// The Observer (WithObserver, default: none; the observe.Observer every package takes)
// receives the relay lag (age of the oldest unsent event), counts of published, failed and
// set-aside events, applied and duplicate events, handler failures, consumers' dead
// letters and cleaned rows; feed Prometheus counters and gauges from it. The library
// registers nothing globally. Relay.Lag reads the lag on demand.
//
// # Measuring performance
//
// Benchmarks print events/s; figures are only meaningful on an idle machine. Against the
// test containers:
//
//	go test -p 1 -run '^$' -bench . -benchtime=5000x ./outbox/...
//
// and against native loopback servers, as for the other packages:
//
//	COMMERCEKIT_MYSQL_DSN='root:pw@tcp(127.0.0.1:3306)/' go test -run '^$' -bench . -benchtime=20000x ./outbox/...
//
// BenchmarkRelay (saramaoutbox; batch size as sub-benchmark) is relay throughput MySQL →
// Kafka through Run, BenchmarkConsumer (saramaoutbox) consumer throughput with dedup Kafka → MySQL,
// BenchmarkConsumerApply the dedup core alone, BenchmarkAdd the writer, BenchmarkEmbedded
// the embedded mode. Kafka is the in-process kfake broker unless COMMERCEKIT_KAFKA_IMAGE
// names a real one (see internal/testenv).
//
// scripts/relaybench.sh sets the relay (examples/relayload) side by side with Watermill's
// forwarder at its default settings, on the native MariaDB of
// ../shared/tools/raw-limits/run.sh: same events, keys and in-process broker; it prints
// both rates and their ratio (make bench reports it; see README).
//
// Rounds do not overlap. A version that committed one round while the next picked and
// published was measured faster but left the committing round's UPDATE waiting on row locks
// of the next round, which waited on it in Go: invisible to InnoDB's deadlock detection,
// the round failed on the lock wait timeout and its batch went out twice (caught by
// relayload's exactly-once check). Each round now commits before the next starts.
package outbox
