// Package coupon is commercekit's coupons: templates, first-come issuance, wallets, the
// discount, and two-step redemption for checkout.
//
// # Design
//
// A Service keeps every durable record in SQL through bun (MySQL/MariaDB or SQLite), in
// tables prefixed coupon_ (CreateSchema): templates, issued coupons with their state, and
// redemptions. Only the first-come decision of issuance has two backends behind the small
// Issuer interface, both proven by the same suite (coupon/coupontest):
//
//   - coupon/sqlcoupon: a conditional update of the template's issued count in the same
//     transaction as the coupon row. Simple, exact, joins the caller's transaction; every
//     issue of one template serialises on one row.
//   - coupon/rediscoupon: one Lua script takes from the remaining count and the user's
//     counter atomically, idempotently on the request ID; the coupon is then written to
//     SQL directly. A rush is settled in Redis and only winners reach SQL. Its package
//     documentation describes the window between the take and the SQL write, how a failed
//     write gives the take back, and what happens when Redis loses its state (the Service
//     rebuilds it from SQL; Recount does it on demand).
//
// Whatever the issuer, SQL holds the line: the request ID is unique (one request, one
// coupon), so is (template, user, ordinal) with ordinals 1..PerUserLimit (no user above
// the limit), and so is (template, place) with places 1..TotalQuantity for a template with
// a total (no template above its total; Coupon.Place).
//
// # One issuer per template
//
// Each issuer keeps its own count of a template (sqlcoupon a counter row, rediscoupon a
// Redis hash), and neither sees the other's takes. Were both to serve one template at
// once (two instances configured differently, a switch from one issuer to the other rolled
// out instance by instance), SQL's unique keys would still hold the total and the per-user
// limit, but the counts would drift apart: the SQL issuer would bump its counter to places
// the Redis coupons hold and fail on the unique key, as a storage error, on every later
// issue. So a template records the issuer that issues it (Issuer.Name): the Service that
// creates it, or the first to issue a template of an earlier version, claims it, and a
// Service with another issuer refuses to issue it with ErrOtherIssuer (an *IssueError;
// errcode DependencyUnavailable: not the caller's fault, and a retry may reach an instance
// with the template's issuer), except to replay a request already served. The check that
// decides is made in the transaction that writes the coupon, under the template row's
// shared lock. Service.ClaimIssuance moves a template to the Service's issuer: it takes
// that row's exclusive lock, which waits for the coupons being written, and builds the new
// issuer's state from the coupons durably issued, in one transaction. ClaimAllIssuance
// moves every template; a server calls it at start, so that the configuration started
// last decides (refserver does: adding Redis to a MySQL deployment moves its templates to
// rediscoupon, and instances not yet replaced answer 503 for them). One authoritative count shared by both issuers was the alternative;
// it would put a SQL write (or a Redis call) on every take, losers of a rush included,
// which is what each issuer exists to avoid, so a template has one owner instead, and a
// misconfiguration fails loudly rather than slowly.
//
// # Guarantees
//
//   - Issue never issues more than TotalQuantity (0 = unlimited) nor more than PerUserLimit
//     to a user, and is idempotent on the request ID, for concurrent duplicates too,
//     whatever the issuer and whatever happens to Redis (a loss of its state with writes in
//     flight included: see rediscoupon). Coupons written by a version without places (run
//     CreateSchema once it has stopped) get theirs from CreateSchema, each one place, none
//     skipped, however many processes run it at once.
//   - Discount is integer arithmetic in minor units: never negative, never more than the
//     order; percent rounds down (10% of 1,999 is 199) and honours MaxDiscount. A discount
//     can be the whole order; whether a coupon may pay alone is the checkout's rule.
//   - Reserve → Confirm, Reserve → Restore, Confirm → Restore (cancel), and Reserve →
//     Expired past a HoldUntil deadline (Sweep, Run): each step is idempotent on the order
//     ID and safe against concurrent calls; of orders racing for one coupon exactly one
//     wins. A restored coupon is usable again unless it has expired. Release is the
//     two-phase void (package hold): Restore that refuses a confirmed coupon.
//   - A coupon's Expired state is computed from ExpiresAt with the Service's clock
//     (WithClock), so expiry needs no background job.
//   - Every rejection is a typed error (IssueError, RedeemError, ValidationError) wrapping a
//     sentinel for errors.Is; errcode.CodeOf and errcode.ReasonOf give its code and stable
//     reason. Storage errors are wrapped with what was being done; context errors are
//     returned as they are.
//
// # Transactions
//
// WithTx(tx) returns a Service whose operations join the caller's bun.Tx (under a
// savepoint, through internal/sqlutil.InTx): checkout reserves the coupon in the
// transaction that creates the order, and a rollback undoes the reservation. Redemption
// always joins; Issue joins only with an issuer whose JoinsTx is true (sqlcoupon). Without
// a transaction, each operation runs in one of its own, retried on deadlock. IssueThen
// runs a caller's function in the transaction that writes a newly issued coupon, with
// either issuer (commerce writes its coupon-issued event there): its failure rolls the
// coupon back and gives the take back.
//
// # Performance
//
// Benchmarks issue from 50 goroutines: BenchmarkIssue* (every request wins a coupon: the
// take and the SQL write), BenchmarkIssueSoldOut* (every request is turned away), and the
// raw rate of the same storage in the same run (BenchmarkRaw*: a conditional UPDATE plus
// INSERT per transaction on one hot row; EVALSHA of a one-line check-and-decrement; one
// INSERT per transaction). Against native servers on loopback:
//
//	COMMERCEKIT_MYSQL_DSN='root@unix(/run/mysqld/mysqld.sock)/' COMMERCEKIT_REDIS_ADDR=127.0.0.1:6379 \
//	  go test -run '^$' -bench . -benchtime 10s ./coupon/sqlcoupon ./coupon/rediscoupon
//
// Without the variables the benchmarks run against the test containers. The conformance
// suite, with the race detector:
//
//	go test -race -count=1 ./coupon/...
package coupon
