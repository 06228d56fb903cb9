// Package sqlidempotency keeps idempotency keys in a SQL database through bun (MySQL/MariaDB
// and SQLite), as an idempotency.Backend, in the table payment_idempotency_keys:
//
//	if err := sqlidempotency.CreateSchema(ctx, db); err != nil { ... }
//	backend := sqlidempotency.New(db)
//	store, err := idempotency.New(backend)
//
// Records are keyed by Ref.ID() (a SHA-256 of scope and key), so uniqueness never depends
// on a collation. No operation holds a transaction of its own: a claim is an INSERT that
// fails on a duplicate, or a compare-and-set UPDATE conditioned on the token and state it
// read; Complete and Release are single conditional statements (the fencing). Expired
// records are ignored, and deleted by Purge in batches of 1,000 — run Store.RunPurger or
// call Store.Purge periodically.
//
// Times are stored as UTC DATETIME(6): on MySQL the DSN needs parseTime=true and the
// default loc=UTC.
//
// WithTx binds the backend to the caller's transaction, so that Complete commits or rolls
// back together with the caller's own writes (see Backend.WithTx).
//
// The backend passes the conformance suite (idempotencytest) on MySQL/MariaDB and SQLite.
// To measure it with 50 concurrent clients (against a native MySQL with
// COMMERCEKIT_MYSQL_DSN='root:pw@tcp(127.0.0.1:3306)/'):
//
//	GOTOOLCHAIN=local go test -run '^$' -bench . -benchtime 5s ./payment/idempotency/sqlidempotency
package sqlidempotency
