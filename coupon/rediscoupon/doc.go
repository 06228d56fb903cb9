// Package rediscoupon is the Redis coupon issuer: the first-come decision is one Lua
// script, so a rush of requests for one template is settled in Redis and only the winners
// reach SQL, where every issued coupon is then written directly (coupon_coupons).
//
// # The take
//
// A template's state in Redis is one hash: the count taken, each user's count and
// ordinals, the places of the template's total that are held or free, and each request's
// take. One script (takeScript) checks, atomically: a request already taken (it answers
// with the same ordinal and place: Issue is idempotent on the request ID even for
// concurrent duplicates), the total quantity, the user's limit; then it takes the user's
// first free ordinal and, for a template with a total, a place (one given back, else the
// next of 1..TotalQuantity), and records the request.
//
// # The window between the take and the SQL write
//
// After the take the Service writes the coupon to SQL in a transaction of its own (which
// is why Issue cannot join the caller's transaction: JoinsTx is false). Between the two,
// Redis has counted a coupon that SQL does not hold yet, so Stats.Taken can run ahead of
// Stats.Issued by the writes in flight. How the window closes:
//
//   - The write commits: both agree.
//   - The write fails and the database said so (a server error; SQLite always answers): the
//     Service checks SQL for a coupon of the request; finding none, it gives the take back
//     (giveBackScript, a no-op unless the request still holds its take), so the count,
//     the user's count, the ordinal and the place are as before. Finding one, the take
//     stands for it. A retry of the request while an attempt is writing replays the take
//     and writes too; the hash counts such attempts, and only the last one to fail gives
//     the take back (the first to fail cannot see the retry's coupon, which may still
//     commit).
//   - The outcome is in doubt (context cancelled, connection lost around COMMIT): the take
//     is kept, because giving back a coupon that did commit would make Redis count one
//     coupon fewer than SQL holds. At worst one coupon fewer is issued, until the client
//     retries with the same request ID (the take is found again and the write resumes) or
//     a Recount.
//   - The process dies between the two: as in doubt.
//
// # SQL holds the line
//
// Whatever Redis says, SQL's unique keys stand behind it: one request ID, one coupon; at
// most PerUserLimit coupons per user (ordinals are 1..PerUserLimit and (template, user,
// ordinal) is unique); at most TotalQuantity coupons per template (places are
// 1..TotalQuantity and (template, place) is unique). So no failure of Redis, however
// timed, issues a coupon too many: at worst it issues fewer, until a Recount.
//
// # Losing Redis
//
// When the template's hash is missing (a flush, a failover to a replica that had not got
// it, a restart without persistence, or simply the first issue) or was written by a
// version without places, the script answers "not loaded" and the Service rebuilds the
// state from SQL (coupon.Service.Recount does the same on demand): it reads every durable
// coupon of the template, stages the hash under a key of its own, the places that no
// coupon holds below the highest held being free, and installs it atomically
// (installScript; of two racing loads the first wins). SQL is the truth, so after a loss
// the count resumes from the coupons durably issued, and idempotency on request IDs
// survives.
//
// Takes whose writes were still in flight when the state was lost (or when a Recount
// read SQL) are not in the rebuilt state; their coupons, if they commit, hold ordinals and
// places that Redis believes free. The first take handed such an ordinal or place has its
// write refused by the unique key; the Service then reads the coupons it collided with
// and the issuer counts them with their ordinals and places and gives the take back, in
// one step (adoptScript), and the request takes again: another place, or sold out once
// the places are all held. The template therefore sells out at exactly its total, and a
// user over the limit is turned away, after any loss; Recount is only needed to make the
// count exact for coupons nobody collided with (Stats.Taken lower than Stats.Issued), and
// is safe while issues are in flight.
//
// # Beside the SQL issuer
//
// A template is issued by one issuer (see coupon's package documentation, "One issuer per
// template"): one created through a Service with the SQL issuer is refused here
// (coupon.ErrOtherIssuer) until coupon.Service.ClaimIssuance moves it to this issuer, which
// rebuilds its state from SQL as Recount does; a take made here before a move away is
// refused when its coupon is written, and given back. Every Redis issuer is one issuer
// (Name "redis"): give them one Redis and one key prefix.
//
// Keys are never expired by the package: a template's hash holds about five fields per
// issued coupon, and one more per request that was retried. Delete it (after the issue
// window closed) with DEL <prefix>{<templateID>}; a later Issue or Stats would reload it
// from SQL.
package rediscoupon
