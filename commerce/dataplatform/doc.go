// Package dataplatform sends every paid order to an external data platform (seed 001:
// "on a successful order, send the order to the data platform asynchronously, with retry
// and a circuit breaker"), off the checkout's path.
//
// # How an order travels
//
// The Notifier is an outbox consumer (NewConsumer, named ConsumerName) of the
// payment-completed topic (Topics). Its handler only queues each paid order — the event's
// JSON payload exactly as commerce wrote it — in the commerce_dataplatform_deliveries table,
// in the transaction in which the consumer records the event as applied: no HTTP call
// ever runs inside a database transaction, and a redelivered event queues nothing twice.
// An event commerce could not have written (under another ID than the order's
// "<order>-payment-completed", or a payload that is not that order) is dead-lettered by
// the consumer, not sent: a Kafka topic takes any producer's messages.
//
// Run (or SendOnce) POSTs the due deliveries to the configured URL through failsafe-go
// policies: a timeout per call (WithTimeout, 2s), a few retries with exponential backoff
// (WithRetries: 3 calls, 100ms..1s) and a circuit breaker (WithBreaker: open at 5 failures
// of the last 10 calls — seed 003's 50% over a window of 10 — for 10s, then half-open).
// Every call carries the header Idempotency-Key: <event ID>, so a platform that receives an
// order twice (its answer was lost, the call retried) can tell. A failed attempt is retried
// later with backoff (WithMaxAttempts: 10 attempts, 1s..5m) and dead-lettered (state dead,
// with its last error) after the last one, or at once when the platform refuses it with a
// 4xx other than 408/429; Redrive queues the dead ones again. A redirect that turns the POST
// into a GET (301, 302, 303: the body is dropped) is a failed call, whatever the GET
// answers; one that repeats the POST (307, 308) delivers. While the breaker is open
// nothing is sent and no attempt is counted: an outage delays orders, it does not kill
// them. Several processes may run the Notifier on one database: each claims a delivery (a
// lease) before sending it.
//
// Guarantees: every paid order is delivered at least once, with the body commerce wrote;
// every copy carries the same event ID. Order between orders is not kept.
//
// The mock platform of development and tests is package platformsim (`refserver
// dataplatform` serves it).
//
// Tests run against SQLite and MariaDB with -race:
//
//	GOTOOLCHAIN=local go test -race -count=1 ./commerce/dataplatform/...
package dataplatform
