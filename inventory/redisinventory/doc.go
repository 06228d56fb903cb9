// Package redisinventory is the Redis backend of inventory: every operation is one Lua
// script, run with EVALSHA through go-redis's Script (which falls back to EVAL when the
// server answers NOSCRIPT, for instance after a restart or SCRIPT FLUSH).
//
//	stock, err := redisinventory.New(rdb) // rdb: *redis.Client, *redis.ClusterClient, ...
//	inv, err := inventory.New(stock)
//
// Reserve is one round trip, and concurrent reservations share it: those that arrive while
// a reserve call of the Backend is in progress go together in the next call (up to two
// calls in flight), each with its own answer; a reservation that finds no call in progress
// goes at once, alone (inventory/internal/groupcommit). The script (reserveManyLua) takes
// them in order, exactly as one after another, but does per batch what it can: the
// server's fixed cost of a call (about 11 µs, against about 1.5 µs per redis.call), one
// read and one write of each SKU's stock and buyer usage, one replay check (EXISTS) over
// all the records and one ZADD to the due index; per reservation there is only its
// record's HSET. Commit and Release are two round trips (a read of the reservation, to
// learn its keys, then the script, which checks the record is unchanged). It cannot join
// a SQL transaction: Inventory.JoinsTx is false, so a caller whose transaction fails
// releases the reservation, and its deadline is the safety net.
//
// # Keys and Redis Cluster
//
// Every key a script touches is passed in KEYS, and every key of a Backend starts with its
// hash tag, "{inventory}:" by default (WithTag): stock:<sku> (a hash of onhand, available,
// sold, limit, synced), buyers:<sku> (units per buyer), res:<id> (a reservation), due (a
// sorted set of live reservation IDs by deadline), adj:<id> (an adjustment ID), skus (every
// SKU), and with NewDurable generation (the marker of the journal's generation). So all keys of one inventory share one Redis Cluster slot, and a reservation
// spanning many SKUs is a single atomic script: there are no multi-slot reservations, and
// no partial reservation to roll back. The trade-off is that one inventory lives on one
// cluster node (one Redis core does tens of thousands of reservations per second); to
// spread load, partition the catalogue into independent inventories with different tags
// (per merchant, per sale event), each a Backend of its own. A reservation spanning two
// partitions would then be two reservations, reserved one after the other and the first
// released if the second fails; the package does not do that for you.
//
// Resolved reservations and adjustment IDs are kept in Redis for the retention period
// (WithRetention, default 24 h). With the plain backend that is how long a replay is
// recognised (a replay after that reserves anew); with NewDurable the journal recognises
// them for ever.
//
// # Durable: SQL as the system of record, Redis as the fast path
//
// NewDurable(rdb, db) is the backend for production: the same scripts, fronted by a SQL
// journal (CreateJournal; MySQL/MariaDB) that makes SQL the system of record of every
// unit, so Redis holds only what can be derived from SQL and a Redis that lost data heals
// itself.
//
//	err := redisinventory.CreateJournal(ctx, db)
//	stock, err := redisinventory.NewDurable(rdb, db)
//	_, err = stock.Heal(ctx)          // at start: builds Redis from the journal if needed
//	go stock.Run(ctx, time.Second)   // the healer
//	inv, err := inventory.New(stock)
//
// The journal: inventory_journal_stock holds per SKU its base (on hand + sold) and buyer
// limit, changed only by SetStock and Adjust (adjustments are rows, idempotent on their ID
// for ever); inventory_journal_reservations holds one row per reservation, inserted by
// Reserve and moved by Commit, Release, expiry and Return (reserved → committed |
// released | expired, committed → returned), and kept for ever; inventory_journal_lines
// its lines by SKU. There is no hot SQL row: a reservation is an INSERT, its resolution an
// UPDATE of its own row. Everything Redis holds derives from them: for each SKU
//
//	sold      = Σ units of committed reservations
//	on hand   = base − sold
//	available = on hand − Σ units of reserved reservations
//	buyer usage = Σ units of the buyer's reserved and committed reservations
//
// Each operation runs in a SQL transaction of its own (Inventory.JoinsTx is false: the
// caller's transaction is not joined, and commerce compensates as for plain Redis). The
// order of the two halves is chosen so that a failure between them never frees a unit the
// journal holds: what takes units (Reserve, Commit, a negative Adjust) changes Redis inside
// the SQL transaction, before its commit; what frees them (Release, expiry, Return, a
// positive Adjust) changes Redis after the commit, so the journal, not Redis, refuses a
// positive Adjust that would take the on-hand count past inventory.MaxOnHand. SetStock,
// which may do either, changes Redis inside its transaction, under the generation's
// exclusive lock, and moves the generation with it, in the journal and (its script) in
// Redis's marker: a setting that does not commit leaves the marker ahead of the journal,
// so Redis fails closed from the moment the script ran until it is rebuilt
// (TestDurableSetStockCut, TestDurableRedisStepCut).
// A half left undone is conservative — units held in Redis that the journal freed, units a
// negative Adjust took in Redis that the journal never recorded, or a Redis reservation
// whose SQL transaction rolled back — and heals: the reservation's deadline (the sweep
// settles Redis reservations the journal does not hold live), a replay of the same call
// (which settles Redis to the journal's state again), or the next rebuild, which the call
// asks for (as for a failed Redis step after the commit; see below) where it would
// otherwise wait for a replay that may never come: a Release or Return whose COMMIT's
// answer was lost (a returned reservation has no deadline left, a released one would hold
// its units until it), a negative Adjust whose transaction failed once its script ran
// (TestDurableResolveCut, TestDurableRemovalCut).
//
// Reserve replays: a reservation the journal holds is returned as the journal has it (a
// released, expired or returned one makes Inventory.Reserve fail); a Redis reservation the
// journal never recorded (its transaction rolled back) is adopted by the retry.
//
// # Redis losing data, and the rebuild
//
// Redis holds a generation marker, the generation of the journal it was built for. Every
// write script checks it against the generation the writer read from SQL (with a shared
// row lock held to its commit), and reads check it too; a SKU key Redis lacks for a SKU
// the journal knows is loss as well (eviction, a partial restore), and so is a SKU's buyer
// usage key without the sentinel field " " that the SKU's creation and every rebuild give
// it (a lost usage key would count every buyer's usage of a limited SKU as none), and a
// key of the inventory holding another type (WRONGTYPE: something else wrote it). The healer also watches
// the server's run ID: a Redis that restarted, or another one after a failover, may hold an
// older copy of the data under a good marker (a restored snapshot, a lagging replica), and
// is rebuilt as well; every rebuild records in Redis the run ID of the server it wrote on
// (the key run), so a process's first heal, which has seen no server yet (the process
// restarted with Redis), rebuilds such a copy too
// (TestDurableRestartedWithOldDataAndProcess), and before that heal (one at start that
// failed) its writers fail closed on such a copy. Writers do not wait for the healer's next look: a reservation or
// commit whose script went through a newly opened connection (a restart breaks every
// pooled one) reads the run ID again before its transaction commits, and fails closed on a
// server the healer has not seen, so an older copy never sells units the journal already
// gave away (TestDurableRestartedWithOldData). Lost data never gives a
// business answer: operations fail with an *errcode.UnavailableError (Dependency
// DependencyRebuilding, RetryAfter RebuildRetryAfter; an HTTP server answers 503
// dependency_unavailable with Retry-After), never ErrUnknownSKU nor
// ErrInsufficientStock, and the healer (Run) is woken.
//
// Rebuild: take the rebuild lock (a SQL row: one rebuild at a time across processes);
// bump the generation under an exclusive lock on its row — which waits for every writer
// still holding the old generation, whose Redis half is done and SQL half not yet
// committed, so no such write can reach SQL after the rebuild read it (the race of a
// reservation taken in Redis under the old generation and committed after the read would
// otherwise oversell; TestDurableRebuildWaitsForWriters proves the wait); read the journal;
// claim the fence (rebuilder) with the new generation; delete every key of the inventory;
// write each SKU's counts, the buyers' usage and the live reservations (so orders placed
// before the loss can still be committed, released or returned), in batches; set the
// marker. Every delete and write batch is a transaction that runs only while the fence
// holds the rebuild's generation: the rebuild lock is a SQL row lock, lost when the
// rebuild's database connection dies, and another process's heal may then rebuild while
// the first is still writing Redis from its older read (TestDurableRebuildWhoseLockDied). Operations fail closed from the bump to the marker.
//
// A change that frees units (a release, expiry, return, positive adjustment) commits in the
// journal before its Redis step; when the guard refuses that step (a rebuild is under way,
// in any process, or happened), the change waits for the rebuild lock and then decides
// whether the rebuild read it or the step must run again. The wait is bounded
// (WithRebuildWait, default DefaultRebuildWait, a few seconds) and holds no database
// connection meanwhile (it tries the lock with SKIP LOCKED between pauses, one change per
// process at a time), so changes waiting behind a long rebuild neither keep their callers
// for the database's lock wait timeout nor take the connections the rebuild or the heal
// needs. A wait that runs out with no rebuild recorded that read the change answers 503
// (DependencyRebuilding, RebuildRetryAfter) and forces the next heal to rebuild: the step
// never runs, and the rebuild, which writes Redis anew from the journal, applies the
// change once; the caller's retry is a replay that changes nothing more
// (TestDurableChangesBehindALongRebuildFailFast, TestDurableChangeBehindARebuildThatMissedIt,
// TestDurableChangesWaitingLeaveTheHealAConnection).
//
// Such a forced rebuild is asked for in the journal too (the row 'behind' of
// inventory_journal_generation holds the generation no rebuild has passed yet), so that
// every process's next heal makes it even when the process that asked died first: a
// restarted one at its start, the others at their next look (Run's interval)
// (TestDurableBehindOutlivesTheProcess). Only when the database fails as well is the
// request this process's alone (it logs so).
//
// Moving from the plain backend: a journal that was never built holds no stock, so the
// first Heal over a Redis that already holds SKUs under the same prefix (a plain Backend's,
// or a Durable's whose journal was lost) fails closed with ErrUnjournaledData instead of
// wiping them. Give the Durable a prefix of its own (WithTag) and set its stock, or wipe the
// old data on purpose with Rebuild and set the stock again.
//
// What an operator sees when Redis restarts empty: a WARN log "Redis rebuilt from the
// journal" with the generation, SKUs, live reservations and the time it took, a second or
// so of 503 dependency_unavailable (Retry-After: 2) on stock requests, and then the same
// stock as before. Nothing to do by hand. Measured (BenchmarkRebuild: 5,000 SKUs and
// 20,000 reservations holding units, 5,000 of them live; MariaDB 10.11 and Redis 7.0 in
// containers on a loaded 2-core machine, load average ~20): 1.2 s per rebuild.
//
//	GOTOOLCHAIN=local go test -run '^$' -bench BenchmarkRebuild -benchtime 5x ./inventory/redisinventory/
//
// The price is a SQL transaction besides the script: with no hot SQL row (a reservation
// is an INSERT, its resolution an UPDATE of that row) it does not serialize on a popular
// SKU, and it runs at the database's commit rate. Reservations share it: those that arrive
// while a journal transaction of reservations is in progress go together in the next one
// (one INSERT of their rows, one of their lines, one reserveMany script call for their
// Redis halves, one commit; a reservation Redis refuses has its rows deleted before the
// commit and fails alone). The ordering argument holds for each: its units are taken in
// Redis inside the transaction that records it. Commit, Release and Return share
// transactions the same way (a queue of their own, resolutions of distinct reservations
// in each batch; two calls with one ID never share one): one SELECT ... FOR UPDATE of
// all their rows, one settle script call (settleManyLua, each reservation with its own
// reply) for those that commit, one UPDATE of the rows that moved, one commit — five
// statements for the whole batch where each commit took five — and, after the commit,
// one settle call for those that freed units (released, expired, returned, and the
// replays of those). Each caller keeps its own answer: not found, already resolved, or a
// Redis record that does not match fails or answers that caller alone. What fails the
// transaction (a Redis call that failed or whose reply was lost, the generation moved, a
// lost connection) fails all its callers with an errcode.ErrUnavailable, and none of
// their rows moves; the units stay taken in Redis (committed there, reserved in the
// journal), and a retry commits each once (TestDurableCommitBatchFailsWhole).
// BenchmarkDurableReserveCommit counts SQL transactions, statements and Redis round trips
// per Reserve+Commit (50 clients, one SKU; MariaDB 10.11 and Redis 7.0 in containers on a
// 2-core machine at load average 25-58, the code before and after run alternately,
// 2026-11-30): before, 1.06 transactions, 5.3 statements and 1.1-1.2 Redis calls per
// Reserve+Commit at 176-393/s; after, 0.145, 0.73 and 0.145 at 547-1,373/s (2.7-5.4×
// in each pair). In the full-mode flash sale (3,000 buyers, 200 clients) a checkout went
// from 5.2 SQL transactions, 48.1-48.4 statements and 7.1 Redis round trips to 4.3, 43.6
// and 6.2, and 78 → 89 and 113 → 121 checkouts/s in two alternating pairs: the commit is
// now a small part of a checkout's cost. BenchmarkHotSKU measures Reserve on one hot SKU, plain and journaled,
// each combined and alone (redisAlone, durableAlone: one reservation per script call or
// transaction), against the raw EVALSHA in one run:
//
//	go test -run '^$' -bench BenchmarkHotSKU -benchtime 5s ./inventory/redisinventory/
//
// It also reports redis-µs/op, the Redis server's CPU time per reservation. Figures from a
// 2-core machine shared with other work (load average 2-6; native MariaDB 10.11 and Redis
// 7.0 on loopback; 50 clients; one hot SKU), so only indicative, raw and ours in one run,
// six runs alternating the code before and after the per-batch script (2026-11-30):
//
//	                                    Reserve/s   raw/s       x-raw       Redis µs/op (raw's)
//	before: the whole script per reservation, 4 calls in flight
//	                                    36.5-54.7k  58.8-83.9k  0.55-0.68   14.8-21.1 (9.8-13.1)
//	after: per-batch script, 2 calls in flight
//	                                    33.1-62.0k  41.5-73.9k  0.69-0.90*  9.9-14.7 (9.5-13.5)
//	Durable before / after (one run each): 8,218/s / 11,476/s; Redis 24.4 / 14.1 µs per reservation
//
// (*) and 0.44 once, while another process loaded the machine; twelve more runs of the
// plain backend gave 0.68-1.53, median about 0.9, and the best 78,119/s against 91,674/s
// raw (0.85). Earlier: 0.36× raw before the shared script call; on a quiet machine (make
// bench, 2026-11-30, before the per-batch script) 0.50× redis-benchmark's EVALSHA, and
// after it (make bench, 04:00 UTC) 55,707/s: 0.73× the raw EVALSHA from Go in the same
// run and 0.64× redis-benchmark's 87,681/s; three runs right after, 0.75-0.81× Go's; at
// 06:02 UTC (make bench, after the Durable's combined resolutions) 49,885/s: 0.76× Go's
// 65,614/s and 0.65× redis-benchmark's 76,614/s, the Durable 12,451/s; at 08:39 UTC
// (make bench) 64,684/s: 0.87× Go's 74,394/s and 0.64× redis-benchmark's 100,326/s, the
// Durable 14,538/s; at 11:01 UTC (make bench, medians of three alternating rounds, since
// single samples moved by a third within minutes) 56,700/s: 0.69× redis-benchmark's
// 82,102/s (0.72-0.78× Go's raw in each round), the Durable 12,447/s. The combined script
// now costs Redis about what the one-line raw EVALSHA does per
// reservation, so under load the Go side (8-11 µs of CPU per reservation on the same two
// cores) decides the rate. What is left per reservation is its record (HSET, about
// 2.3 µs), its due-index entry (about 1.7 µs within the batch's ZADD) and its share of
// the replay check (about 0.6 µs); a string record written with one MSET per batch would
// save about 1.2 µs of the HSET, at the price of a new record format.
//
// Running Redis with persistence (appendonly yes) stays worthwhile as defence in depth:
// it makes rebuilds rare. It is not what keeps the stock: the journal is.
//
// # The plain backend: stock from outside, and Redis restarting empty
//
// New(rdb) alone keeps everything in Redis; a SQL inventory (sqlinventory) may be its
// system of record, with a SKU sold through one of the two at a time:
//
//   - Warm-up: WarmUp(ctx, stocks) creates each SKU Redis lacks from the SQL store's Stocks
//     (its Available becomes Redis' on-hand count, with its buyer limit) and leaves SKUs
//     Redis has alone, so it is safe at every start.
//   - Write-back: Redis counts units sold per SKU and the part already written back.
//     WriteBack(ctx, fn) hands each SKU's pending range of its sold count to fn once, as a
//     fixed range, and moves the watermark after fn succeeds; fn records it, idempotently,
//     typically as an Adjust of the SQL store with ID "redis-sold:<sku>:<to>" and delta
//     from-to. A failed or interrupted write-back hands the same range out again, so every
//     sale reaches the SQL store exactly once.
//   - Redis restarting empty: Reserve fails with ErrUnknownSKU and Commit and Release of
//     earlier reservations with ErrReservationNotFound; a warm-up brings back the stock as
//     the SQL store knows it, without the sales not yet written back nor the units of the
//     lost reservations. Resolved reservations and returns are remembered for the
//     retention period only. Use NewDurable where that is not acceptable.
package redisinventory
