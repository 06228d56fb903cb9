// Package redisidempotency keeps idempotency keys in Redis, as an idempotency.Backend:
//
//	store, err := idempotency.New(redisidempotency.New(rdb))
//
// Each key is one hash named prefix + "{" + Ref.ID() + "}" (a hash tag, so the package
// works on Redis Cluster), and each operation is one Lua script run with EVALSHA (falling
// back to EVAL after a server restart or SCRIPT FLUSH), hence atomic. The scripts receive
// the Store's clock as an argument ("now", in milliseconds) and decide with it, so expiry
// and lock timeouts follow an injected clock in tests; every write also sets the key's
// Redis TTL to the retention, so Redis deletes expired records by itself and Purge has
// nothing to do. Redis cannot join a SQL transaction: JoinsTx reports false.
//
// The backend passes the conformance suite (idempotencytest) against a real Redis. To
// measure it with 50 concurrent clients (against a native server with
// COMMERCEKIT_REDIS_ADDR=127.0.0.1:6379):
//
//	GOTOOLCHAIN=local go test -run '^$' -bench . -benchtime 5s ./payment/idempotency/redisidempotency
package redisidempotency
