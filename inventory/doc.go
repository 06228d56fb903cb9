// Package inventory reserves stock for checkout: the hot path of a first-come sale, where
// thousands of buyers race for a few units. It never oversells, never loses or invents a
// unit, and runs close to what its storage can do.
//
// # Model
//
// Each SKU has an on-hand count, split into available and reserved units (OnHand =
// Available + Reserved), a count of units sold, and an optional per-buyer limit. Stock is
// set with SetStock (absolute) and changed with Adjust (a delta with a reason, idempotent on
// its ID); Stock and Stocks read it, Stocks many SKUs in one round trip.
//
// A reservation is a two-phase hold, like a pending transfer: Reserve takes the units of
// all its lines or none, for a TTL; then exactly one of Commit (reserved units become sold),
// Release (they go back to available) or expiry (the same, when the deadline passes first).
// Sweep expires what is due and Run sweeps in the background until its context ends; a
// Commit or Release that arrives at or after the deadline expires the reservation itself
// and fails with ErrReservationExpired, so a late payment never takes units that were given
// back. A committed reservation may later be returned (Return: a cancelled or returned
// purchase): its units go back to available and stop counting as sold. Every verb is
// idempotent on the reservation ID: Reserve again with the same lines returns the original
// reservation while it is live or committed (with other lines: ErrIdempotencyConflict),
// Commit of a committed, Release of a released and Return of a returned reservation
// succeed without moving anything, and the crossed calls (Commit after Release, Release
// after Commit, any after expiry or return) are typed errors that move nothing. A replay
// never revives a dead reservation: Reserve with the ID of a released, expired or returned
// one fails with *StateError, so a retry after a failure cannot report units it does not
// hold.
//
// The per-buyer limit ("one per customer") counts, per SKU and buyer, the units the buyer
// holds and has bought; it is checked atomically with the reservation, and Release and
// expiry give the allowance back. A SKU with a limit cannot be reserved without a BuyerID.
//
// # Layers
//
// Inventory is the portable API. It validates and normalizes every request once, for every
// backend (IDs and SKUs are 1-64 printable ASCII bytes; 1 to 50 lines of positive
// quantities; lines of one SKU are summed and sorted; at most 999 units of one SKU; on-hand
// counts and adjustment deltas at most MaxOnHand, 10^12), reads the injectable clock, and
// hands the atomic work to a Backend (which refuses an Adjust that would take the on-hand
// count past MaxOnHand: only it sees the count):
//
//   - inventory/sqlinventory: SQL tables through bun, MySQL/MariaDB or SQLite (embedded).
//     It joins the caller's transaction: inv.WithTx(tx) inside bun's RunInTx puts the
//     reservation in the same local transaction as the order and its outbox events.
//   - inventory/redisinventory: Redis, one Lua script per operation. It cannot join a SQL
//     transaction (JoinsTx is false): the caller releases on rollback, and the deadline is
//     the safety net. redisinventory.NewDurable fronts it with a SQL journal that is the
//     system of record of every unit (on hand, sold, returned, and which reservation holds
//     what), so Redis holds only derived state: a Redis that restarted empty is detected
//     (a generation marker) and rebuilt from SQL by itself, failing closed meanwhile with
//     errcode.ErrUnavailable, never "unknown SKU" or "out of stock". Its package doc tells
//     the recovery story: what an operator sees, and how long a rebuild takes (5,000 SKUs:
//     about a second).
//
// Both pass the same conformance suite, inventory/inventorytest.
//
// # Errors
//
// Sentinels for errors.Is and typed errors for errors.As: *ValidationError
// (ErrInvalidRequest, with ErrInvalidQuantity, ErrTooManyLines or ErrQuantityTooLarge),
// *UnknownSKUError, *InsufficientStockError (which SKU, requested, available),
// *BuyerLimitError, *ConflictError (ErrIdempotencyConflict), ErrReservationNotFound,
// *StateError (ErrReservationCommitted, ErrReservationReleased, ErrReservationExpired,
// ErrReservationReturned, ErrReservationNotCommitted), ErrContention when the storage gave
// up on lock conflicts, and errors matching errcode.ErrUnavailable when a dependency is
// down or being rebuilt. Backends translate native errors; context errors are returned as
// they are.
//
// # Performance
//
// Measure on native loopback servers, in the same sitting as the raw limits of the storage
// (tools/raw-limits in the shared workspace starts the servers when nothing answers):
//
//	bash /work/shared/tools/raw-limits/run.sh 5
//	COMMERCEKIT_MYSQL_DSN='root@unix(/run/mysqld/mysqld.sock)/' COMMERCEKIT_REDIS_ADDR=127.0.0.1:6379 \
//	  GOTOOLCHAIN=local go test -p 1 -run '^$' -bench . -benchtime 5s \
//	  ./inventory/redisinventory ./inventory/sqlinventory
//
// BenchmarkHotSKU in each package gives the hot-SKU figure and its multiple of the raw one
// in a single run (x-raw): Reserve with the group commit and without it next to the raw
// transaction in sqlinventory, the plain and the journaled Redis Reserve next to the raw
// EVALSHA in redisinventory:
//
//	go test -run '^$' -bench BenchmarkHotSKU -benchtime 5s ./inventory/sqlinventory/ ./inventory/redisinventory/
//
// The benchmarks below run Reserve alone and Reserve+Commit, one unit of one hot SKU or spread
// over 1,000 SKUs, from 50 goroutines, and report ops/s. Each package also benchmarks the
// raw figure from Go with the same client and server, so one run gives the ratio:
// BenchmarkRawEvalSha (the one-line check-and-decrement script) next to
// BenchmarkRedis/Reserve/hot, and BenchmarkRawTx (conditional UPDATE + INSERT) next to
// BenchmarkMySQL/Reserve/hot. BenchmarkHotSKU compares the conditional UPDATE with
// SELECT ... FOR UPDATE (alone, aloneSelectForUpdate).
//
// Indicative figures, on a 2-core machine loaded by other work (load average 6-11), native
// MariaDB 10.11 (default durability) and Redis 7.0 on loopback, 50 clients:
//
//	Redis   raw EVALSHA check-and-decrement   73,000-82,000/s
//	        Reserve, hot SKU                   48,000-49,000/s   (about 62% of raw)
//	        Reserve, 1,000 SKUs                48,000-55,000/s
//	        Reserve+Commit, hot SKU            21,500-22,700/s
//	MariaDB raw conditional UPDATE + INSERT     2,400-2,650/s
//	        Reserve, hot SKU                    4,100-4,300/s    (about 160% of raw)
//	        Reserve, hot, SELECT FOR UPDATE     2,650-2,750/s
//	        Reserve, 1,000 SKUs                 8,400/s
//	        Reserve+Commit, hot SKU             1,750-1,900/s
//
// Those figures predate the group commit: concurrent reservations of one SKU set now share
// SQL transactions, and concurrent Redis reservations one script call (see sqlinventory
// and redisinventory for the scheme and newer figures). Alone, the SQL Reserve beats the
// raw transaction because it inserts the reservation row first
// and takes the hot stock row last, with one conditional UPDATE, so the row lock is held
// only from that UPDATE to the COMMIT; and bun sends each statement in one round trip
// (arguments formatted client-side) where database/sql with placeholders prepares and
// executes. On Redis the bound is the server's time per call: receiving and answering an
// EVALSHA costs about 11 µs of server CPU, each redis.call inside a script about 1.5 µs,
// so the Reserve script keeps to five calls (see redisinventory).
package inventory
