// Package redisinventory is the Redis backend of inventory: every operation is one Lua
// script, run with EVALSHA through go-redis's Script (which falls back to EVAL when the
// server answers NOSCRIPT, for instance after a restart or SCRIPT FLUSH).
//
//	inv := inventory.New(redisinventory.New(rdb)) // rdb: *redis.Client, *redis.ClusterClient, ...
//
// Reserve is one round trip; Commit and Release are two (a read of the reservation, to learn
// its keys, then the script, which checks the record is unchanged). It cannot join a SQL
// transaction: Inventory.JoinsTx is false, so a caller whose transaction fails releases
// the reservation, and its deadline is the safety net.
//
// # Keys and Redis Cluster
//
// Every key a script touches is passed in KEYS, and every key of a Backend starts with its
// hash tag, "{inventory}:" by default (WithTag): stock:<sku> (a hash of onhand, available,
// sold, limit, synced), buyers:<sku> (units per buyer), res:<id> (a reservation), due (a
// sorted set of live reservation IDs by deadline), adj:<id> (an adjustment ID), skus (every
// SKU). So all keys of one inventory share one Redis Cluster slot, and a reservation
// spanning many SKUs is a single atomic script: there are no multi-slot reservations, and
// no partial reservation to roll back. The trade-off is that one inventory lives on one
// cluster node (one Redis core does tens of thousands of reservations per second); to
// spread load, partition the catalogue into independent inventories with different tags
// (per merchant, per sale event), each a Backend of its own. A reservation spanning two
// partitions would then be two reservations, reserved one after the other and the first
// released if the second fails; the package does not do that for you.
//
// Resolved reservations and adjustment IDs are kept for the retention period (WithRetention,
// default 24 h) so replays are recognised; a replay after that reserves anew.
//
// # Where stock comes from, where sales go, and Redis restarting empty
//
// The system of record is a SQL inventory (sqlinventory); Redis holds the live counts of
// the SKUs on sale, and a SKU is sold through one of the two at a time.
//
//   - Warm-up: WarmUp(ctx, stocks) creates each SKU Redis lacks from the SQL store's Stocks
//     (its Available becomes Redis' on-hand count, with its buyer limit) and leaves SKUs
//     Redis has alone, so it is safe at every start.
//   - Write-back: Redis counts units sold per SKU and the part already written back.
//     WriteBack(ctx, fn) hands each SKU's pending range of its sold count to fn once, as a
//     fixed range, and moves the watermark after fn succeeds; fn records it, idempotently,
//     typically as an Adjust of the SQL store with ID "redis-sold:<sku>:<to>" and delta
//     from-to. A failed or interrupted write-back hands the same range out again, so every
//     sale reaches the SQL store exactly once. Run it periodically and after a sale.
//   - Redis restarting empty: the inventory fails closed. Stock keys are gone, so Reserve
//     fails with ErrUnknownSKU (nothing is oversold), and Commit and Release of
//     reservations made before fail with ErrReservationNotFound, which the caller treats as
//     a failed order (compensate, don't ship). WarmUp from the SQL store brings the stock
//     back as that store knows it. Sales committed in Redis but not yet written back, and
//     units held by the lost reservations, are not in that store: after a warm-up they are
//     on sale again. Bound that window by running Redis with persistence (appendonly yes;
//     appendfsync everysec loses at most about a second) and writing back often; where even
//     that is too much, warm up from the SQL stock minus the orders committed since the
//     last write-back, which the caller's own order table knows.
package redisinventory
