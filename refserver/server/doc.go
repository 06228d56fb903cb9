// Package server is refserver's HTTP layer: the routes, middleware, configuration and
// wiring of commercekit's reference server, importable so that drivers and tests can run
// it in process (cmd: github.com/commercekit/commercekit/refserver).
//
// # Design
//
// Handlers are thin: decode JSON, call commerce.Service, encode JSON. The route table
// (Route, one per "METHOD /path" pattern on net/http's ServeMux) drives the mux, the
// middleware and the OpenAPI test. Around every route, outermost first: X-Request-ID in
// and out, an access log line (log/slog JSON) and the latency histogram by route pattern
// and status, panic recovery (a 500 problem, never a broken connection), a body size limit
// (http.MaxBytesReader); then, per route, a per-request deadline (not on the cached stock
// read, which bounds its own backend read), bearer authentication (signature and expiry,
// then the logout denylist), a per-user token bucket on write routes (per token on logout,
// which a thief spending the user's bucket must not be able to refuse), and Idempotency-Key
// handling on order creation, payment, points top-up and adding to the cart.
//
// With Redis the write buckets are in Redis, shared by every instance. A write waits for
// that Redis COMMERCEKIT_RATE_LIMIT_REDIS_TIMEOUT at most (100 ms by default); one it does
// not answer in time is limited by the process's own bucket (bounded by the burst) and
// opens a cool-down of a second in which writes do not ask Redis, after which one write
// at a time asks it again. A Redis that hangs therefore costs a write at most that
// timeout, and writes that do not need Redis nothing more while it hangs (ratelimit.go).
//
// # Members, sessions and carts
//
// Package refserver/member keeps the members and their sessions in SQL: POST /v1/members
// signs up (bcrypt; with an optional Idempotency-Key, a retry after a lost answer with the
// same key, login ID and password gets the same member, while any other sign-up with a
// taken login ID stays 409 login_id_taken), POST /v1/sessions logs in (an access token of 15 minutes with a jti
// and a session ID, and a refresh token stored only as its SHA-256), POST
// /v1/sessions/refresh rotates (a reused refresh token revokes its session; with an
// optional Idempotency-Key, a retry after a lost answer gets the same pair), DELETE
// /v1/sessions logs out, and POST /v1/sessions/revoke logs out with the refresh token alone
// (RFC 7009), for a client whose access token has expired: 204 for any token, known or
// not. Authentication has a separate denylist step after the token's
// signature and expiry: a token whose jti was logged out (or whose session was revoked) is
// 401 token_revoked, except on DELETE /v1/sessions, where it is 204 at once without
// writing anything (a logout is idempotent: one sent again after its answer was lost
// answers as the first did); a denylist that cannot answer is 503 dependency_unavailable,
// never a pass. The denylist is in Redis when Redis is configured, else in SQL (purged of expired
// entries every minute). Tokens minted by `refserver token` carry a jti too, so they work
// as before and can be logged out. Failed logins are limited per login ID and per client
// address (429 too_many_login_attempts with Retry-After); sign-up, login, refresh and
// revocation are also under the write rate per client address.
//
// Package commerce/cart keeps carts (GET /v1/cart, POST /v1/cart/items behind an
// Idempotency-Key, PUT and DELETE /v1/cart/items/{product_id}); POST /v1/orders with
// {"from_cart": true} orders the cart and empties it in the order's transaction.
//
// # Errors
//
// Every error is application/problem+json (RFC 9457) with a stable "code": the reason the
// error carries (errcode.ReasonOf: "out_of_stock", "coupon_sold_out", ...). codeRules in
// errors.go is the one table from error codes (errcode.Code, which every package's errors
// carry) to statuses: 400 malformed input, 401 missing/invalid/expired token or bad
// credentials, 403 not an admin, 404 not found (also another user's order), 409 a state
// conflict or a request with the same Idempotency-Key still running, 413 a body over the
// limit, 422 a rule violation or an Idempotency-Key reused for another request, 429 rate
// limited, 503 a dependency down or a timeout (with Retry-After). A body is one JSON object
// without unknown fields nor a name twice in one object (400 malformed_request; names match
// case-insensitively, as encoding/json reads them); a member the OpenAPI document requires
// missing or null (PUT /v1/products/{id}/stock without on_hand would set the stock to 0), a
// NUL in any of its strings or in a coupon template's path ID, and a list cursor that is
// not printable ASCII, are 400 invalid_request, never passed to a store. A coupon named at
// checkout that is unknown, another user's or not usable is 422 coupon_unusable; another
// user's reads as an unknown one, detail included (nobody learns which coupon IDs exist). A
// dependency failure is classified once: the packages wrap Redis, MySQL and Kafka
// transport errors as errcode.ErrUnavailable (internal/depfail), which errcode.CodeOf puts
// before any business meaning (503 dependency_unavailable), and the same classifier
// catches a raw transport error that slipped through, so a dependency is never a 500 nor a
// business answer. Per-dependency timeouts (timeouts.go) keep that answer quick.
//
// # Idempotency
//
// POST /v1/orders, POST /v1/orders/{id}/pay, POST /v1/points/top-ups and POST
// /v1/cart/items require an Idempotency-Key. payment/idempotency's Store runs the request at most once per (user,
// key), fingerprinting method, path and canonical JSON body: a retry gets the stored status
// and body with Idempotent-Replayed: true; another body with the same key is 422; a retry
// while the first runs is 409. Successes and every final 4xx the execution decided (409
// invalid_order_state or order_expired, 422, 404) are stored and replayed, so the key
// stays bound to its request (but not a 422 idempotency_key_reused of the execution's own:
// commerce found the key bound to another request, whose retry must still get its answer
// after the stored answers were lost); 5xx, 429, 202 (the PG has not answered: the retry continues
// the payment), answers with Retry-After (a request in flight elsewhere) and input refused
// before anything ran (400, 413) are not, so the retry runs again. A response the store could not take at once (Redis or MySQL down) is still
// answered and stored in the background. The key is also passed to commerce, whose own idempotency covers
// the case where the stored response is lost. The SQL store is used on the embedded default,
// the Redis store when Redis is configured. A replayed 201 carries its Location again.
// POST /v1/coupon-templates/{id}/issue requires a key too (the coupon's request ID is made
// from it). On every route a missing key is 400 idempotency_key_missing, and one over 255
// bytes or not UTF-8 is 400 invalid_idempotency_key. The header idempotency_key, the name
// the source documents' ADR-004 gives it, is read as the same key (proxies often drop
// header names with underscores, so Idempotency-Key is the one to send); two different keys
// in one request are 400 invalid_idempotency_key. A restock is POST
// /v1/products/{id}/stock/adjustments, idempotent on the adjustment's own id, which the
// inventory keeps with its journal, so a retry however late changes nothing; PUT
// /v1/products/{id}/stock sets an absolute count, and sent again after a sale it puts the
// sold units back.
//
// # Backends
//
// Config selects each backend independently; Config.Mode names the result. With nothing
// configured (embedded): SQLite in ./refserver.db with one connection (WAL,
// synchronous=NORMAL: durable against a crash of the process, not of the machine), SQL
// inventory, SQL coupon issuer, SQL idempotency keys, the outbox relayed to an in-process
// consumer, the in-process PG simulator (its webhooks delivered in process), and a demo
// catalogue. Full mode: MySQL, Redis (inventory, coupon issuance, idempotency keys), Kafka
// (the outbox relay's publisher) and the PG simulator over HTTP (refserver pgsim). The PG
// gateway is always behind payment/resilient's policies.
//
// # Events, metrics and the data platform
//
// commerce's events go to per-type topics (commerce.DefaultTopics, overridden by
// COMMERCEKIT_KAFKA_TOPICS). The metrics collector (commerce/collector) consumes them off
// the embedded dispatcher, or in full mode as the Kafka consumer group commerce-collector —
// in the server unless COMMERCEKIT_COLLECTOR=false, or alone as `refserver collector`
// (RunCollector) — and rolls weeks and months up every COMMERCEKIT_ROLLUP_INTERVAL. GET
// /v1/rankings and GET /v1/products/{id}/metrics read its tables (public; bad input is a
// 400). With COMMERCEKIT_DATAPLATFORM_URL set, commerce/dataplatform sends every paid order
// there (`refserver dataplatform` is a mock platform).
//
// # Operations
//
// /healthz answers while the process runs; /readyz pings the database, Redis, Kafka and
// the PG (over HTTP): 503 with Retry-After when the database or Redis is down, and while
// draining; with only Kafka or the PG down it answers 200 "degraded" (events wait in the
// outbox; only paying fails, fast), so that a load balancer does not pull every instance
// for them. It names each backend "ok" or "unavailable" and nothing more (it is public):
// why a check failed is logged ("readiness check failed", with the check and its error);
// /metrics (not public: admin tokens, and the scrape token COMMERCEKIT_METRICS_TOKEN when
// set, which opens nothing else) serves the server's own Prometheus registry:
// commercekit_http_request_duration_seconds{route,method,status} and the libraries' figures through their observer hooks (operations and latency of
// inventory, ledger and coupon by result, expired holds, payment transitions by state and
// cause, refunds, breaker state, outbox relay lag and events, idempotency outcomes, orders
// by outcome). On SIGINT/SIGTERM Serve stops accepting, drains in-flight requests, stops
// the background loops (commerce.Service.Run: relay, reconciler, cleaner, expiry,
// recovery, sweepers) and closes the stores.
//
// # Performance
//
// examples/flashsale is the end-to-end benchmark: N buyers racing for M units over HTTP,
// against an in-process server (default) or a running one:
//
//	go run ./examples/flashsale -buyers 2000 -units 100
//	go run ./examples/flashsale -url http://localhost:8080 -jwt-secret "$COMMERCEKIT_JWT_SECRET"
package server
