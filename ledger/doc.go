// Package ledger is a double-entry point ledger on bun, for MySQL/MariaDB and SQLite:
// users' points are charged, earned, spent, refunded, adjusted and held in two phases,
// every movement is a transfer between two accounts, and Verify proves at any time that
// the stored balances are what the journal says.
//
// # Accounts and transfers
//
// Each user has two accounts, created on first credit: UserAccount(user) holds the points
// they can use (Balance.Available) and HeldAccount(user) the points set aside by open holds
// (Balance.Held). System accounts are the other side of every movement: AccountCharged
// (bought points come from it), AccountRewarded (earned points), AccountRedeemed (spent and
// captured points go to it, refunds come from it), AccountExpired and AccountAdjusted.
// Every transfer moves a positive amount from one account to another, so the balances of
// all accounts always sum to zero: the system sources go negative by what users received.
//
//	Charge   @charged  → user       Hold     user → held
//	Earn     @rewarded → user       Capture  held → @redeemed (+ release: held → user)
//	Spend    user → @redeemed       Void     held → user
//	Refund   @redeemed → user       expiry   held → user (hold), user → @expired (points)
//	Adjust   @adjusted ↔ user
//
// # Idempotency
//
// Every operation takes a caller-supplied transfer ID (hold ID for Hold, Capture and Void),
// at most 64 bytes and compared byte for byte; all transfer and hold IDs share one
// namespace. Repeating an operation with the same ID and content returns the original
// Receipt without applying anything, even when it could no longer be applied (a repeated
// Spend after the balance ran out, a repeated Earn whose ExpiresAt has passed); the same ID with different content fails with an
// *IDReusedError (ErrIDReused). This holds under concurrency: requests racing with the
// same ID apply once and all get the same receipt. A rejected operation (insufficient
// points, bad input) records nothing, so its ID stays free.
//
// # Two-phase holds
//
// Hold(ctx, holdID, user, amount, timeout) moves points from available to held; the hold
// is then resolved exactly once, by Capture(ctx, holdID, amount ≤ held), which posts the
// amount to @redeemed and gives the rest back, by Void(ctx, holdID), which gives it all
// back, or by its deadline: from the deadline on, Capture and Void fail with ErrHoldExpired
// and the next Sweep gives the points back. Repeating the Capture or Void that resolved a
// hold returns its receipt; any other resolution fails with a *HoldError (ErrHoldCaptured,
// ErrHoldVoided, ErrHoldExpired). A captured hold is refunded like a spend: Refund with the
// hold ID as SpendID. Checkout holds points before charging the card and voids them when
// the charge fails.
//
// # Expiry
//
// Earn takes an optional ExpiresAt. The points of such an earn form a lot; spends,
// captures and debit adjustments use the lots first, soonest expiry first, then the other
// points. Sweep (and Run, which calls it every second) expires what is left of each due
// lot, oldest first, through an expire transfer user → @expired. Held points never
// expire: only the available part of a due lot expires, and the rest when the hold gives
// it back (a capture uses the due lot first). Refunded points do not expire. Until a Sweep
// runs, due points are still in the balance; Run's interval is the precision of expiry.
//
// # Transactions
//
// Every operation takes effect in one transaction: its balance updates, journal rows and
// hold or lot rows commit together. New(db) with a *bun.DB opens a transaction per
// operation and retries it on deadlock or lock wait timeout. WithTx(tx) joins a caller's
// bun.Tx (the checkout's, which also reserves stock and writes the order and the outbox
// event): each operation runs under a savepoint, so one that fails undoes only its own
// writes, and everything commits or rolls back with the caller. Inside a caller's
// transaction nothing is retried, since a deadlock aborts the whole transaction.
//
// # Storage
//
// CreateSchema creates four tables: ledger_accounts (one row per user: available, held,
// and expiring, the sum of the user's lots), ledger_transfers (the journal: one row per
// transfer with both accounts, the amount, the user's balance after it, the reference;
// unique on the caller's ID), ledger_holds and ledger_lots.
//
// A spend is one conditional update and one insert in a transaction:
//
//	UPDATE ledger_accounts SET available = available + ?, ... WHERE user_id = ? AND available >= ?
//	INSERT INTO ledger_transfers (..., available_after, held_after, ...)
//	    VALUES (..., (SELECT available FROM ledger_accounts WHERE user_id = ?), ...)
//	    RETURNING available_after, held_after, (SELECT expiring ...)  -- unique id: a repeat fails here
//
// The journal row carries the user's balance after the transfer, which the insert reads
// from the account row the update has locked. That takes INSERT ... RETURNING (MariaDB
// 10.5 and later, SQLite 3.35 and later); on MySQL, which has none, a SELECT of the
// account runs between the two. Spending points due to expire also uses up their lots,
// soonest expiry first.
//
// The update takes the points only if they are there, so available never goes below zero
// whatever the interleaving (a CHECK constraint backs it up); it also serialises the
// user's own operations, so a user's journal rows are numbered in commit order. A credit
// is one upsert (INSERT ... ON DUPLICATE KEY UPDATE / ON CONFLICT DO UPDATE). When the
// journal insert hits the unique key, the transaction (or savepoint) is rolled back and
// the stored transfer is read and compared: original receipt or ErrIDReused. A hold is
// resolved under a conditional update of its row (state = 'pending'), so two racing
// resolutions cannot both succeed; lots change only under their row locks. Locks are
// always taken in the order spend (a refund's), hold, account, lots, and by primary key: a locking read or
// update through another index would, on InnoDB, also lock the gaps beside the rows, where
// other users' transfers, holds and lots are inserted, and those would wait for this
// transaction. So a hold's resolution updates its row by primary key only (FORCE INDEX),
// a refund locks its spend by seq after a plain read of it, and the lots are locked by
// primary key after a plain read of their IDs, checked complete against the account's
// expiring points (when a caller's older snapshot missed one, a locking read of the
// user's range follows). On SQLite, which has no row locks, writers are serialised by the
// database; with more than one connection to a file database, set a busy timeout
// (the busy_timeout pragma) so that writers wait for each other rather than fail
// after the retries.
//
// # Hot accounts
//
// Every transfer touches a system account, so a row per system account updated by each
// transfer would serialise all traffic on its lock. System accounts therefore have no
// row: the journal row names them, and their balances are derived from the journal
// (SUM over ledger_transfers) when Verify runs. Per transfer the only rows written are the
// user's account row, contended only by that user's own traffic, an append to the journal,
// and for holds and lots their own row. Throughput on many accounts is thus bounded by the
// database's commit rate, and on one hot account by its single-row lock, as in the raw
// baseline below. The zero sum stays checkable: Verify adds the stored user balances to the
// derived system balances. If the system balances are needed often on a very large journal,
// checkpoint them periodically (balance at a journal position plus the rows after it).
//
// # Verify
//
// Verify reads one consistent snapshot and recomputes every account's balance from the
// journal; it reports as Drift, naming the account, any stored available or held points
// that differ from the journal, held points that differ from the pending holds, expiring
// points that differ from the lots, a spend's refunded total that differs from its refunds
// or exceeds it, a system account on the wrong side of zero, and a non-zero sum. It reads
// the whole journal: run it as an audit, not per request.
//
// # Errors
//
// Sentinels for errors.Is and typed errors for errors.As: ErrInvalid (*ValidationError),
// ErrInsufficientPoints (*InsufficientPointsError, with available and requested),
// ErrBalanceLimit (*BalanceLimitError: a credit past the limit, see MaxBalance),
// ErrIDReused (*IDReusedError), ErrSpendNotFound, ErrRefundExceedsSpend (*RefundError),
// ErrHoldNotFound, ErrHoldCaptured, ErrHoldVoided, ErrHoldExpired, ErrCaptureExceedsHold
// (*HoldError), ErrDrift (*DriftError), ErrConflict. Database failures are wrapped in
// ErrStorage (the driver's error is wrapped too); context errors are returned as they are.
//
// # Performance
//
// BenchmarkSpend spends 1 point per operation from 50 goroutines, on one hot account and
// spread over 1,000 accounts, on SQLite (in memory) and MySQL. To compare it with the raw
// single-row transaction rate of the same server (a conditional UPDATE + INSERT per
// transaction, 50 connections, 1 and 1,000 rows), run in one sitting, with a native MariaDB
// on its default socket (run.sh starts one when none answers):
//
//	bash /work/shared/tools/raw-limits/run.sh 5
//	COMMERCEKIT_MYSQL_DSN='root@unix(/run/mysqld/mysqld.sock)/' GOTOOLCHAIN=local \
//	    go test -run '^$' -bench BenchmarkSpend -benchtime 5s ./ledger/
//
// and read spends/s beside raw-limits' "mysql raw tx (conditional UPDATE + INSERT)" figures
// for 1 and 1,000 rows. On MariaDB a spend runs the raw transaction's statements (on MySQL
// one more while it holds the row lock: the SELECT of the balance after it). Without
// COMMERCEKIT_MYSQL_DSN the MySQL figures come from a Testcontainers MariaDB and are only
// indicative. BenchmarkCheckout runs the ledger's part of a checkout the same way (Hold,
// then CaptureAll and Earn), and go test -v -run TestStatementsPerOperation prints the
// statements of each operation on each database.
package ledger
