// Package idempotency makes a request safe to retry: an idempotency key with Stripe's
// semantics, kept in a reusable Store for an HTTP layer's Idempotency-Key header (refserver's
// order, payment, top-up and cart routes use it; seed 000 ADR-004). Checkout itself does not
// need it: commerce makes its own retries safe with the order's key and one payment per
// order attempt, in the same transaction as the work. Backends:
// redisidempotency (Redis, Lua scripts) and sqlidempotency (bun: MySQL/MariaDB and SQLite,
// table payment_idempotency_keys), both proven by the conformance suite in
// idempotencytest.
//
// # Semantics
//
// A key is scoped: (scope, key) names one record, so two callers (merchants, API clients)
// never meet on the same key. Scope and key are 1..255 characters of UTF-8 without control
// characters; anything else is an *InvalidError (ErrInvalid, HTTP 400) and nothing runs.
//
// The first request claims the key with the Fingerprint of its content (FingerprintRequest
// hashes method, target and body, canonicalising a JSON body; FingerprintValue hashes any
// value's canonical JSON; any caller-computed string of up to 128 bytes works too). Then,
// for every later request with the same key:
//
//	first request completed, same fingerprint   → its stored Response, replayed byte for byte
//	first request completed, other fingerprint  → ErrKeyReused (422)
//	first request running,   same fingerprint   → ErrInProgress (409)
//	first request running,   other fingerprint  → ErrKeyReused (422)
//	first request crashed (lock expired), same  → the request takes the key over and runs
//	first request crashed (lock expired), other → ErrKeyReused (422)
//	record older than the retention             → the key is free, for any request
//
// Decisions, where Stripe leaves room:
//   - A different fingerprint is ErrKeyReused even while the first request runs: a retry
//     cannot fix it, so 409 ("try again") would mislead.
//   - Only a retry of the same request takes over a crashed claim: the crashed request may
//     have had effects, so its key stays bound to it for the retention.
//   - The retention (default 24 h, WithRetention) counts from the moment the final
//     response is stored (for an abandoned claim, from the claim).
//   - The lock timeout (default 60 s, WithLockTimeout) must exceed the longest a request
//     takes, PG retries included; Do gives fn a context that expires with the claim.
//
// # What is stored
//
// Do (and the low-level Claim/Complete/Release it wraps) leaves the choice to the caller,
// explicitly, through what fn returns (see Func): a Response with a nil error is final —
// successes and business failures (a Response with an ErrorCode, such as a declined card)
// alike — and is stored and replayed; an error is transient (context cancellation, "PG
// unavailable, retry later") and releases the key so the client's retry runs. A panic
// releases the key too.
//
// # Guarantees
//
//   - At most one request at a time runs under a key, across processes: the claim is one
//     atomic operation in the backend (a Lua script; an INSERT or a compare-and-set UPDATE).
//   - Fencing: each claim carries a random token; Complete and Release present it, and a
//     stale owner that comes back after its lock was taken over gets ErrLockLost and
//     changes nothing. Fencing protects the stored response, not fn's side effects: fn must
//     itself be idempotent (the payment ID is the PG's idempotency key), because a process
//     that crashes after fn's effects and before Complete leaves a claim that a retry takes
//     over after the lock timeout, running fn again.
//   - Every replay of a key returns the byte-identical stored response (Status, ErrorCode,
//     Body) for the whole retention.
//   - Work that was done is never reported as failed. Claim and Complete are safe to run
//     twice (a client library retrying after a timeout, a stalled Redis running a command
//     late): a claim that finds its own token, and a completion that finds its own token
//     done with the same response, succeed. When the backend is unavailable
//     (errcode.ErrUnavailable) after fn ran, Do still returns fn's response and keeps
//     storing it in the background; releases, and the abandon of a claim whose reply was
//     lost, are retried in the background too, until the lock timeout (Store.Close waits
//     for them). On Redis a released token is remembered (TombstoneTTL), so its claim
//     arriving late changes nothing.
//   - With sqlidempotency, Complete can run in the caller's transaction
//     (Store.WithBackend(backend.WithTx(tx))), so the response commits or rolls back
//     together with the writes it describes. Redis cannot join a transaction (JoinsTx).
//
// # Time
//
// Every time comes from the Store's clock (WithClock) and is passed to the backend, so
// tests move time without sleeping; the Redis scripts receive "now" as an argument for the
// same reason, and also set a Redis TTL equal to the retention so records disappear by
// themselves. Processes sharing a backend need synchronised clocks: a clock running ahead
// sees locks expire early by as much. Expired records are ignored; Store.Purge (or the
// RunPurger loop) deletes them from SQL.
//
// # Errors and metrics
//
// Sentinels for errors.Is (ErrInvalid, ErrKeyReused, ErrInProgress, ErrLockLost), carried
// by *InvalidError and *KeyError for detail (KeyError.LockedUntil tells a client when a
// crashed request's key frees up). HTTPStatus maps them to status codes in one place.
// Backend errors other than these come back wrapped, context errors as they are; a
// backend that cannot be reached or answers too late matches errcode.ErrUnavailable. An
// Observer (WithObserver) is told of every outcome (Event), e.g. for a Prometheus counter.
//
// # Performance
//
// Store.Do costs, per request: on Redis one script call for a replay and two for a new key
// (claim, complete); on SQL a new key costs an INSERT and an UPDATE and a replay a failed
// INSERT and a SELECT (the fast path is the first request's). Measure with 50 concurrent
// clients, a fresh key per request ("fresh") and replays of completed keys ("replay"):
//
//	GOTOOLCHAIN=local go test -run '^$' -bench . -benchtime 5s \
//	    ./payment/idempotency/redisidempotency ./payment/idempotency/sqlidempotency
//
// By default the servers are Testcontainers containers; to measure against native loopback
// servers, set COMMERCEKIT_MYSQL_DSN (a user that may create databases, e.g.
// 'root:pw@tcp(127.0.0.1:3306)/') and COMMERCEKIT_REDIS_ADDR (e.g. 127.0.0.1:6379).
package idempotency
