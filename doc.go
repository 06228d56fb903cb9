// Package commercekit is the module overview of commercekit, a Go SDK for the transactional
// heart of an e-commerce backend, and a thin reference HTTP server built on it. The package
// itself has no API; import the packages below.
//
// The leaves, each usable on its own, each with backends proven by one conformance suite:
//
//   - inventory: stock reservation (hold → commit | release, with deadlines and per-buyer
//     limits); backends inventory/redisinventory (Lua) and inventory/sqlinventory (bun: MySQL,
//     SQLite), proven by inventory/inventorytest.
//   - payment: payments with a persisted state machine, a Gateway interface (every adapter
//     proven by payment/gatewaytest; webhooks confirmed with it, never trusted), the PG simulator
//     payment/pgsim, resilience policies payment/resilient (failsafe-go), reconciliation,
//     refunds, composite-method rules, and Stripe-style idempotency keys (payment/idempotency).
//   - coupon: templates, first-come issuance (coupon/rediscoupon, coupon/sqlcoupon), wallet,
//     redemption (reserve → confirm | restore).
//   - ledger: a double-entry point ledger: charge, earn, spend, refund, holds, Verify.
//   - outbox: a transactional outbox relayed to Kafka (outbox/saramaoutbox), idempotent
//     consumers, dead letters.
//   - errcode: the error vocabulary shared by all of them. Every package's errors carry an
//     errcode.Code (InvalidArgument, NotFound, Conflict, AlreadyExists, FailedPrecondition,
//     DependencyUnavailable, ...) and a stable snake_case reason ("out_of_stock"), read with
//     errcode.CodeOf and errcode.ReasonOf; invalid input is one thing
//     (errcode.ErrInvalidArgument, *errcode.InvalidError naming the field), so is a key
//     reused with another request (errcode.ErrKeyReused) and a dependency that could not
//     answer (errcode.ErrUnavailable: retry later). refserver maps codes to HTTP statuses
//     in one short table.
//   - hold: the one two-phase contract of stock, points and coupons (Hold keyed by the
//     caller's ID with a deadline, Post, Void, Lookup; ErrGone, ErrPosted, ErrVoided), proven
//     by hold/holdtest; checkout speaks it through one adapter per leaf.
//   - observe: the one observer shape every package reports its operations through.
//   - sqlitedb: opens the embedded SQLite the way the SQL backends need it.
//
// Above them, commerce composes checkout (place, pay, cancel, expire, recover, audit) with
// compensation and writes versioned events on per-type topics; commerce/collector turns them
// into per-product sales metrics and daily, weekly and monthly rankings, and
// commerce/dataplatform sends every paid order to a data platform; commerce/cart keeps carts
// and orders them in the order's transaction. refserver serves it all over HTTP, with
// members, sessions and logout (refserver/member). The dependency direction is
// refserver → commerce → leaves; the leaves never import each other.
//
// SQL is the system of record in every mode; Redis holds fast, derived state that is rebuilt
// from SQL when lost; a failing dependency is answered honestly (errcode.ErrUnavailable, an
// HTTP 503 with Retry-After), never with a wrong business answer. Every SQL-backed operation
// takes a bun.IDB, so a caller's transaction can carry an order and everything it touches.
//
// Start with the README (the reference server's quick start and the measured figures) and each
// package's documentation and runnable examples.
package commercekit
