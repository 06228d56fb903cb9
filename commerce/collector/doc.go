// Package collector keeps per-product sales metrics from commerce's events and serves
// popular-product rankings per day, ISO week and month (seed 003's commerce-collector:
// EventHandled dedup, daily → weekly → monthly pre-aggregation, O(1) ranking reads).
//
// # Collecting
//
// The collector is an outbox consumer (NewConsumer, named ConsumerName) of the topics that
// carry payment-completed and order-cancelled events (Topics). The outbox consumer hands
// it batches of up to 100 new events in a transaction in which it also records them as
// applied (one set-based lookup of the batch's IDs, one multi-row insert), so a duplicate
// delivery — a relay crash, a Kafka rebalance, a replay from offset 0 — changes nothing.
// In that same transaction Handle:
//
//   - adds each sale (payment-completed) to the daily row of each product of the order:
//     one order, its units, its revenue (what the buyer paid, the discount shared among the
//     lines in proportion to their amounts, so the lines sum to the amount paid);
//   - nets out each refund (order-cancelled of an order that was paid, i.e. with paidAt):
//     one cancellation, the units and revenue refunded (refundPoints + refundAmount: what
//     was paid less the reward's shortfall the buyer kept, shared among the lines as the
//     sale was), subtracted in NetUnits/NetRevenue;
//   - marks the ISO week and the month of every day it touched as dirty;
//   - counts the events per stream (topic, aggregate), which the outbox numbers 1, 2, 3, ...
//     without a gap: Gaps lists the streams with a number not applied (an event still in
//     flight, or dead-lettered), whatever order the events arrived in.
//
// Each event counts on the day it happened (its "at") in the collector's zone (WithLocation,
// default Asia/Seoul). The daily rows are updated with one multi-row upsert per batch,
// in (day, product) order so concurrent batches never deadlock each other. A payload that
// does not decode, or of a schema version the collector does not know, is a permanent error:
// the outbox consumer dead-letters that event and applies the rest.
//
// # Rollups and rankings
//
// Weekly (ISO weeks, Monday to Sunday) and monthly rows are computed from the dailies by
// Recompute, which replaces a period's rows with the sums of its days' in one transaction
// — idempotent, safe to run at any time, e.g. to repair. RollupDirty recomputes the periods
// marked dirty (a period changed again meanwhile stays marked), and RunRollups calls it in
// a loop. A late event for a closed day therefore updates the day at once and its week and
// month at the next rollup. The source document's batch job works in chunks of 100; a
// rollup here is one INSERT ... SELECT ... GROUP BY per period instead, set-based.
//
// Ranking reads one period's pre-aggregated rows through an index on (period, net_units
// DESC, product_id): a top-N is an index range read in order, never a scan of the dailies.
// Ties are broken by product ID. ProductMetrics reads one product's rows over a range.
//
// Tables (CreateSchema; MySQL 8 / MariaDB 10.8+ or SQLite, no Redis): commerce_metrics_daily,
// commerce_metrics_rollups, commerce_metrics_dirty, commerce_metrics_streams (one small row
// per aggregate and topic, like the outbox's own outbox_streams).
//
// # Running it
//
// Embedded: subscribe the consumer to an outbox.Dispatcher for each of Topics(svc.Topics()).
// With Kafka: run a saramaoutbox.NewConsumerHandler(consumer) with Run(ctx, group, topics...)
// on a consumer group of its own (refserver runs it in process, or alone as `refserver
// collector`). Run RunRollups beside it.
//
// # Performance
//
// BenchmarkCollector measures the collector's events/s beside the consumer's raw dedup rate
// (the same consumer with a handler that does nothing) in the same run, batches of 100
// sales of two lines over 100 products:
//
//	GOTOOLCHAIN=local go test -run '^$' -bench BenchmarkCollector -benchtime 5000x ./commerce/collector/
//
// On the loaded 2-core development machine (Testcontainers MariaDB 10.11, SQLite in
// memory), two runs: SQLite 6,430 events/s against 18,090 for dedup alone (ratio 0.36);
// MariaDB 1,660-3,200 against 4,610-11,600 (ratio 0.14-0.69 — the machine was shared, the
// spread is noise). The collector adds two upserts (dailies and rollup marks) and the
// stream counts to the consumer's two statements per batch.
package collector
