package idempotency

import (
	"context"
	"time"
)

// Backend is what a storage backend implements: the atomic operations on one record per
// Ref, with every time supplied by the Store (whose clock is injectable). The Store owns
// validation, tokens, the clock and the meaning of outcomes; a backend only has to make
// each operation atomic. idempotencytest.Run is its specification: a backend is correct when
// it passes that suite.
//
// A record is live while its ExpiresAt is after the Now of the operation looking at it; a
// record that is not live is treated exactly like an absent one.
type Backend interface {
	// Claim atomically looks at the record of q.Ref and acts on q.Decide(record), with a nil
	// record when there is none:
	//   - ClaimCreated: store a fresh running record (q's fingerprint, token, lock and
	//     expiry), replacing any record that is not live;
	//   - ClaimTakenOver: replace the token, LockedUntil and ExpiresAt of the running record;
	//   - ClaimExists: change nothing and return the record as it is.
	// The *Record is returned only with ClaimExists.
	Claim(ctx context.Context, q ClaimRequest) (ClaimOutcome, *Record, error)

	// Complete atomically turns the running record of q.Ref holding q.Token into a done
	// record with q.Response and q.ExpiresAt. It is idempotent: when the record is already
	// done, completed by q.Token with the same response (a retry, by the client library or
	// the Store, of a completion whose reply was lost), it changes nothing and returns nil.
	// If there is no such record (absent, held by another token, done by another token or
	// with another response), it changes nothing and returns ErrLockLost. A lock that has
	// expired without being taken over is still held: fencing is by token, not by time.
	// Claim is idempotent the same way: a running record already holding q.Token (a retried
	// claim) is reported as ClaimCreated.
	Complete(ctx context.Context, q CompleteRequest) error

	// Release atomically deletes the running record of ref holding token, so the key is
	// free again, or returns ErrLockLost and changes nothing. The Store also releases the
	// token of a Claim that failed with errcode.ErrUnavailable, whose outcome is unknown: a
	// backend whose claims may still arrive after that (a Redis that was stalled) makes
	// sure a later Claim with that token changes nothing.
	Release(ctx context.Context, ref Ref, token string) error

	// Purge deletes the records that are not live at now and returns how many. A backend
	// whose storage expires records by itself (Redis key TTLs) may return 0.
	Purge(ctx context.Context, now time.Time) (int64, error)

	// JoinsTx reports whether the backend's operations can run inside the caller's SQL
	// transaction (see sqlidempotency.Backend.WithTx).
	JoinsTx() bool
}

// Ref names one idempotency key: the caller's scope (an account, an API client) and the
// key the caller chose. The same key in two scopes names two independent records.
type Ref struct {
	Scope string
	Key   string
}

// ID returns a fixed storage identifier for r: the hex SHA-256 of its length-prefixed scope
// and key (64 bytes). Backends key records by it, which keeps storage keys short, free of
// characters special to the store (Redis hash tags, SQL collations that ignore case or
// trailing spaces) and distinct for distinct refs.
func (r Ref) ID() string { return string(hash("ref", []byte(r.Scope), []byte(r.Key))) }

// Record is the stored state of a key.
type Record struct {
	// Fingerprint is the fingerprint of the request that claimed the key.
	Fingerprint Fingerprint
	// Done is true once the request's final response is stored.
	Done bool
	// Response is the final response; only when Done.
	Response Response
	// LockedUntil is, while running, when the claim expires and may be taken over.
	LockedUntil time.Time
	// ExpiresAt is when the record stops being live.
	ExpiresAt time.Time
}

// ClaimOutcome is what a Backend's Claim did.
type ClaimOutcome int

// The outcomes of Backend.Claim.
const (
	// ClaimCreated: there was no live record; a fresh claim was stored.
	ClaimCreated ClaimOutcome = iota + 1
	// ClaimTakenOver: the running record's lock had expired and the request had the same
	// fingerprint; the claim now belongs to the new token.
	ClaimTakenOver
	// ClaimExists: the live record was left as it is and returned.
	ClaimExists
)

// ClaimRequest is one claim attempt, as the Store hands it to a Backend.
type ClaimRequest struct {
	Ref         Ref
	Fingerprint Fingerprint
	// Token is random and unique to this attempt; Complete and Release must present it.
	Token string
	// Now is the Store's clock at the attempt; LockedUntil and ExpiresAt are Now plus the
	// lock timeout and the retention.
	Now, LockedUntil, ExpiresAt time.Time
}

// Decide is the rule every backend applies atomically: given the stored record of q.Ref
// (nil if none), what Claim must do. A record that is not live counts as none. A running
// record is taken over only when its lock has expired (LockedUntil <= Now) and the new
// request has the same fingerprint: a crashed request may have had effects, so its key
// stays bound to its request.
func (q ClaimRequest) Decide(r *Record) ClaimOutcome {
	switch {
	case r == nil || !r.ExpiresAt.After(q.Now):
		return ClaimCreated
	case !r.Done && r.Fingerprint == q.Fingerprint && !r.LockedUntil.After(q.Now):
		return ClaimTakenOver
	}
	return ClaimExists
}

// CompleteRequest stores the final response of the claim holding Token.
type CompleteRequest struct {
	Ref      Ref
	Token    string
	Response Response
	// Now is the Store's clock at completion; ExpiresAt is Now plus the retention, so a
	// response is kept for the full retention after it was produced.
	Now, ExpiresAt time.Time
}
