// Package rediscoupon is the Redis coupon issuer: the first-come decision is one Lua
// script, so a rush of requests for one template is settled in Redis and only the winners
// reach SQL, where every issued coupon is then written directly (coupon_coupons).
//
// # The take
//
// A template's state in Redis is one hash: the count taken, each user's count and
// ordinals, and each request's take. One script (takeScript) checks, atomically: a request
// already taken (it answers with the same ordinal: Issue is idempotent on the request ID
// even for concurrent duplicates), the total quantity, the user's limit; then it takes the
// user's first free ordinal and records the request.
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
//     the user's count and the ordinal are as before. Finding one, the take stands for it.
//     A retry of the request while an attempt is writing replays the take and writes too;
//     the hash counts such attempts, and only the last one to fail gives the take back
//     (the first to fail cannot see the retry's coupon, which may still commit).
//   - The outcome is in doubt (context cancelled, connection lost around COMMIT): the take
//     is kept, because giving back a coupon that did commit would let one coupon too many
//     be issued. At worst one coupon fewer is issued, until the client retries with the
//     same request ID (the take is found again and the write resumes) or a Recount.
//   - The process dies between the two: as in doubt.
//
// So failures can only make Redis count more than SQL holds (fewer coupons issued than the
// total), never fewer. The unique keys in SQL stand behind Redis in any case: one request
// ID, one coupon; at most PerUserLimit coupons per user whatever Redis says (ordinals are
// 1..PerUserLimit and (template, user, ordinal) is unique).
//
// # Losing Redis
//
// When the template's hash is missing (a flush, a failover to a replica that had not got
// it, a restart without persistence, or simply the first issue), the script answers "not
// loaded" and the Service rebuilds the state from SQL (coupon.Service.Recount does the same
// on demand): it reads every durable coupon of the template, stages the hash under a key
// of its own and installs it atomically (installScript; of two racing loads the first
// wins). SQL is the truth, so after a loss the count resumes from the coupons durably
// issued, and idempotency on request IDs survives. Takes whose writes were still in flight
// when the state was lost and that commit after the load read SQL are not counted: the
// total can then be passed by at most that many coupons (the per-user limit still holds,
// by the unique key); if a later take of the same user then collides with such a coupon's
// ordinal, the Service keeps that ordinal taken (Forget) and takes another. Run Recount
// after an incident, once in-flight issues have drained, to make the count exact.
//
// Keys are never expired by the package: a template's hash holds about three fields per
// issued coupon, and one more per request that was retried. Delete it (after the issue
// window closed) with DEL <prefix>{<templateID>}; a later Issue or Stats would reload it
// from SQL.
package rediscoupon
