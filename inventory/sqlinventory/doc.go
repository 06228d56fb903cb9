// Package sqlinventory is the SQL backend of inventory, on bun: MySQL/MariaDB (MySQL 8.0+
// or MariaDB 10.6+, for SKIP LOCKED) or SQLite as the embedded backend.
//
//	db := bun.NewDB(sqldb, mysqldialect.New())
//	err := sqlinventory.CreateSchema(ctx, db)
//	inv, err := inventory.New(sqlinventory.New(db))
//
// # Transactions
//
// Every operation runs in a transaction. On a *bun.DB it opens its own and retries it (up
// to sqlutil.DefaultAttempts times, with jitter) on a MySQL deadlock or lock wait timeout
// or a busy SQLite; what still fails is inventory.ErrContention. inv.WithTx(tx), with the
// bun.Tx of the caller's RunInTx, joins the caller's transaction under a savepoint: a
// failed operation undoes only its own writes and leaves the transaction usable; a
// deadlock is returned at once (as ErrContention, with the driver's error still in the
// chain), since only the transaction's owner can run it again. So checkout can write the
// order, reserve its stock and stage its outbox events in one local transaction.
//
// # Tables and locking
//
// inventory_stock (sku, available, reserved, sold, buyer_limit), inventory_reservations
// (one row per reservation, its lines compactly in one column, "sku=qty,..."; indexed by
// state and deadline for the sweeper), inventory_buyer_usage (units per SKU and buyer,
// kept whenever a reservation names a buyer, so a limit set later counts past purchases),
// inventory_adjustments (the audit trail and idempotency record of Adjust). IDs and SKUs
// use a binary ASCII collation on MySQL; times are BIGINT Unix milliseconds.
//
// # Hot SKUs: group commit
//
// On a *bun.DB, reservations of the same SKUs share transactions (inventory/internal/
// groupcommit): those that arrive while a reservation of those SKUs is being committed
// queue up, and the first of them leads the whole queue (up to 128) through one
// transaction as soon as that commit is done — the classic group commit, with no timer: a
// reservation that finds nothing in progress commits at once, alone. In the shared
// transaction each reservation still gets its own row and its own answer: one INSERT of
// all the rows, one upsert of the buyers' usage rows, one locking read of the stock rows,
// the checks in Go, reservation after reservation, on the counts read under the lock (the
// same typed errors as alone), one UPDATE per SKU with the units taken, and a DELETE of
// the rows of those refused. A reservation whose ID exists (a replay) is answered from
// its row; a second one with the same ID waits for the next batch. The lead passes to the
// next batch before the COMMIT, so that batch inserts its rows while this one commits.
// With inv.WithTx(tx) a reservation runs alone in the caller's transaction: nothing else
// may join it.
//
// Alone, Reserve is one INSERT of the reservation row, one upsert of the buyer's usage
// rows (with a buyer only), and one conditional UPDATE per line:
//
//	UPDATE inventory_stock SET available = available - ?, reserved = reserved + ?
//	 WHERE sku = ? AND available >= ? [AND the buyer limit holds]
//
// When the UPDATE matches no row, a plain read says why (unknown SKU, insufficient stock,
// buyer limit), so a sold-out SKU under a storm of buyers costs no extra lock wait. Every
// transaction takes its rows in one order, reservation rows, then usage rows by (SKU,
// buyer), then stock rows by SKU, so transactions wait for each other but do not deadlock;
// the hot stock row is taken last and held only until the commit. A replay reads the
// existing row under the shared lock its failed INSERT already holds, so concurrent
// replays of one ID wait for the first instead of deadlocking over a lock upgrade. The
// sweeper locks due reservations with FOR UPDATE SKIP LOCKED, so sweepers and a Commit
// in progress never wait for each other.
//
// The conditional UPDATE was chosen by measurement over SELECT ... FOR UPDATE, check,
// UPDATE (BenchmarkHotSKU/alone and /aloneSelectForUpdate, 50 connections, one hot row, native MariaDB 10.11 on a
// loaded 2-core machine): about 4,100 against 2,700 reservations/s, one statement and one
// round trip fewer with the lock held. BenchmarkHotSKU measures the group commit against
// the raw transaction in one run (ops/s, x-raw, res/tx: reservations per transaction):
//
//	go test -run '^$' -bench BenchmarkHotSKU -benchtime 5s ./inventory/sqlinventory/
//
// On a 2-core machine under heavy load from other work (load average 15-28, native
// MariaDB 10.11, 50 clients, one hot SKU) it gave 10,205 reservations/s grouped (21.5 per
// transaction) and 1,629/s alone against 684 raw tx/s in the same run, and 3,568 grouped
// against 1,133 raw in another: 3-15× raw, the spread being the noise of that machine.
// On a quiet machine (make bench, 2026-11-30): 17,077 reservations/s grouped (24.6 per
// transaction) against raw-limits' 1,284 hot-row tx/s, 13.3× (issue 16's target: 3×).
package sqlinventory
