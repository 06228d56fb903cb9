// Package payment charges and refunds payments through a payment gateway (PG) so that no
// failure — a crash, a timeout, a lost response, a PG outage, a late webhook, a client
// retrying — can charge a customer twice or leave a charge without a record.
//
// # Payments and their state machine
//
// A Payment (ID, order ID, amount in minor units and currency, method, PG reference) moves
// through
//
//	REQUESTED -> APPROVED | DECLINED | UNKNOWN | ABANDONED
//	UNKNOWN   -> APPROVED | DECLINED                  (reconciliation)
//	ABANDONED -> APPROVED | DECLINED                  (only if the PG says so after all)
//	APPROVED  -> PARTIALLY_REFUNDED -> REFUNDED       (or APPROVED -> REFUNDED)
//	any other -> REVIEW                               (the PG contradicts the record)
//	REVIEW    -> DECLINED | APPROVED | PARTIALLY_REFUNDED | REFUNDED   (ResolveReview only)
//
// Every transition is stored in payment_transitions with its time and cause (Transitions); a
// unique (payment, state) key makes the database itself refuse a state entered twice. A move
// the machine does not allow is a *TransitionError (ErrIllegalTransition).
//
// # Record first, then call the PG
//
// Service.Pay commits the payment as REQUESTED in a transaction of its own before calling the
// PG, then records the answer in another. A caller whose own state must change with the
// payment (an order moving to PAYING) records it in its own transaction instead:
// Service.Request(ctx, tx, req) joins the caller's bun.Tx (under a savepoint), so the payment
// and the caller's work commit together or not at all; after the commit, Service.Submit
// charges the recorded payment. Submit reads the payment as committed and never calls the PG
// for one that is not on record (a rolled-back transaction): ErrPaymentNotFound. Nothing else
// joins a caller's transaction: every PG call is made outside any transaction and every answer
// is recorded in a transaction of its own, so no rollback of the caller's work can erase the
// record of a charge the PG has made; never call Pay or Submit inside your own transaction. A
// crash between the commit and the call leaves a REQUESTED payment that the Reconciler
// settles (submitting it with the same key when the PG never saw it).
//
// Every PG call carries an idempotency key the PG deduplicates on: the payment ID for Approve,
// the refund ID for Cancel. Pay and Refund are idempotent on those IDs too, so a client may
// repeat them freely: a settled payment is returned as it is, an unsettled one asked about
// again with the same key, never charged twice. Request and Submit are idempotent the same way.
// A PG keeps its keys only for a while (Stripe prunes them after a day) and takes a request
// repeated after that for a new one, so the Service relies on a key only within a window
// (WithGatewayKeyWindow, an hour by default): an unsettled payment older than that is looked
// up (Gateway.Status) and sent again only if the PG never saw it, as the Reconciler does; an
// older PENDING refund is sent again only if the PG's refunded total shows it was not made.
//
// # Outcomes
//
// Pay returns the payment as recorded and an error saying why it is not APPROVED: a
// *DeclineError (DECLINED, final, never retried); ErrGatewayUnavailable (still REQUESTED:
// nothing was charged, e.g. the circuit breaker is open; retry later); ErrOutcomeUnknown
// (UNKNOWN: the PG may have charged it; a retry, a webhook or the Reconciler will tell).
// ErrGatewayUnavailable and ErrOutcomeUnknown match errcode.ErrUnavailable.
//
// # Giving up a payment the PG never saw
//
// A caller that would rather answer "retry later" than leave its buyer waiting on a payment
// the Reconciler may charge much later submits the payment it recorded with Attempt instead
// of Submit: when the PG was certainly not reached (ErrGatewayUnavailable), the payment
// moves to ABANDONED (ErrAbandoned) — nothing was charged, and nothing ever sends that
// payment ID again, so the caller pays with a new one. The abandonment is a conditional
// update requiring that no one but the Attempt itself ever took the payment up (an Attempt
// takes it up first when no one did, and otherwise takes it up as Submit does); every
// other submitter (Submit, Pay, the Reconciler) first takes a REQUESTED payment up with a
// conditional update of its own (moving its updated_at past its created_at; Pay records
// the payment it creates so), so of an abandonment and a submission exactly one goes ahead
// and the PG cannot charge an abandoned payment. A caller that records the payment in its
// own transaction and then attempts it itself (commerce's Pay) records it with
// RequestToAttempt, taken up by that caller in the same INSERT, and sends it with
// AttemptRecorded, which then needs no write of its own before the PG call. Should the PG report one approved all the same, that is recorded
// (ABANDONED -> APPROVED) with, in the same transaction, the refund of all of it
// ("void-<payment>", PENDING), sent at once and otherwise completed by the Reconciler:
// nothing fulfils an abandoned payment, so its charge goes back. CrossCheck reports an
// abandoned payment the PG knows.
//
// # Resilience
//
// The resilient subpackage wraps any Gateway with failsafe-go policies: a per-attempt timeout,
// retries with exponential backoff and jitter (only of calls carrying an idempotency key, only
// on errors that may pass, never a decline), a circuit breaker (by default open at 5 failures
// of the last 10 calls, half-open after 30s) and a bulkhead. A Gateway that knows without
// calling the PG that a call would be refused (resilient.Gateway while its breaker is open)
// implements Readiness; Service.Ready asks it, so that a caller can answer "retry later"
// before it records or holds anything. The pgsim subpackage is a PG simulator, in process and
// over HTTP, with a Client adapter.
//
// # Settling exactly once
//
// A payment left REQUESTED or UNKNOWN is settled by whichever comes first: the client's retry,
// the PG's webhook or the Reconciler (Gateway.Status; resubmitted with the same key if the PG
// never saw it).
//
// A webhook is a notification, never proof: HandleWebhook verifies its signature with the PG's
// WebhookVerifier, then asks the PG (Gateway.Status) and records the PG's own answer; a claim
// the PG does not confirm (a forgery signed with a leaked secret) records nothing and is
// refused with ErrWebhookUnconfirmed. A claim the record already holds (APPROVED for an
// approval, DECLINED for a decline) has nothing to confirm: the PG is not asked, and a
// contradiction the PG did not announce is left to CrossCheck, as without the webhook. When the PG's own answer contradicts the record
// (declined there, approved here, or the reverse, or another amount), the payment moves to
// REVIEW, is logged as an ERROR and told to the Observer (a "contradiction" Event): a person decides,
// and nothing settles it automatically again. When the decision is to give back whatever the
// PG holds of it (its owner fulfilled nothing on it), ResolveReview asks the PG again and
// takes its record: DECLINED when it holds nothing, else the refunds made at the PG recorded
// and the rest refunded, REFUNDED; a refund of it still PENDING is first settled by the PG's
// record, as the Reconciler settles it (FAILED, unsent, when the PG declined the payment and
// never made it), so nothing is refunded twice. CrossCheck asks the PG about every settled
// payment and reports those its record contradicts, for an audit. Each settlement is a
// conditional update (UPDATE ... WHERE id = ? AND state = <the state read>) committed with its
// transition row, so exactly one of racing settlers moves the payment; the others find it
// settled and return it as it is.
//
// # Refunds
//
// Service.Refund refunds all or part of a payment, idempotent on the refund ID. The refund is
// recorded as PENDING and its amount reserved on the payment by a conditional update before the
// PG is called, so the total refunded never exceeds the amount paid, however many refunds race;
// refunds of one payment are serialised (ErrRefundInProgress while one is with the PG). A
// refund left PENDING is completed by a webhook or the Reconciler. A PENDING refund is taken
// for made without sending it again only when the PG lists a refund of its amount under its
// refund ID (GatewayPayment.Cancels): a refund an operator made in the PG's console, even
// of the same amount, is never taken for it (the contradiction is reported for a person).
//
// # Method rules
//
// Plan.Validate checks a composite payment plan (POINT, COUPON, CARD, BNPL) against the method
// rules: a coupon never pays alone, BNPL never combines and needs at least 10,000 KRW, a plan of
// several methods needs CARD as its main method, points only within the balance, and the parts
// add up to the order amount. It is pure: run it before holding anything.
//
// # Storage and metrics
//
// CreateSchema creates payment_payments, payment_transitions and payment_refunds on MySQL/MariaDB
// or SQLite. An Observer (WithObserver) is told of every transition and settled refund, e.g. to
// count payments by outcome; resilient.Observer is told of breaker state changes.
//
// # Performance
//
// BenchmarkPay measures approvals per second through the whole Service against the in-process
// simulator at zero latency, on SQLite and MySQL, with and without the policies;
// resilient.BenchmarkGateway measures the policies alone:
//
//	go test -run '^$' -bench . -benchtime 2s ./payment/ ./payment/resilient/
//
// Against a native MySQL server instead of the test container:
//
//	COMMERCEKIT_MYSQL_DSN='user:password@tcp(127.0.0.1:3306)/' go test -run '^$' -bench 'BenchmarkPay/MySQL' -benchtime 5s ./payment/
package payment
