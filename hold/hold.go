// Package hold is the two-phase contract that stock, points and coupons share, after
// TigerBeetle's pending transfers: a hold keyed by the caller's ID with a deadline, resolved
// at most once by Post (commit, capture, confirm) or Void (release, void, restore), each
// idempotent on the ID, and a Lookup. A hold past its deadline voids itself.
//
// The leaves keep their native verbs (inventory Reserve/Commit/Release/Get, ledger
// Hold/Capture/Void/LookupHold, coupon Reserve/Confirm/Restore/Redemptions); a caller that
// drives all three the same way (checkout) speaks Holder through one small adapter per
// leaf. What every leaf shares is the meaning of its refusals: each leaf's own errors match
// ErrGone, ErrPosted and ErrVoided under errors.Is, so "is the hold gone?" is one question
// whichever leaf answers it.
//
// The package imports nothing of commercekit: the leaves import it for its errors.
package hold

import (
	"context"
	"errors"
	"time"
)

// The contract's refusals. A leaf's own errors match them: made with Mark, or wrapping one
// of them (commercekit's leaves declare theirs with errcode.New(code, reason, text,
// hold.ErrVoided), so that they carry an error code as well).
var (
	// ErrGone: the hold holds nothing any more and cannot be posted: it does not exist (never
	// made, or forgotten by a store past its retention), was voided, or passed its deadline.
	ErrGone = errors.New("hold: gone")
	// ErrPosted: the hold was already posted, so it cannot be voided (or posted differently).
	ErrPosted = errors.New("hold: already posted")
	// ErrVoided: the hold was already voided, by the caller or by its own deadline. It also
	// matches ErrGone.
	ErrVoided = Mark("hold: already voided", ErrGone)
)

// Mark returns a sentinel error with its own text that also matches every one of kinds
// under errors.Is: a leaf declares, for example,
//
//	ErrHoldExpired = hold.Mark("ledger: hold expired", hold.ErrVoided)
//
// so that its callers may ask the leaf's question or the contract's.
func Mark(text string, kinds ...error) error { return &marked{text: text, kinds: kinds} }

type marked struct {
	text  string
	kinds []error
}

func (e *marked) Error() string   { return e.text }
func (e *marked) Unwrap() []error { return e.kinds }

// State is where a hold stands.
type State string

// The states of a hold.
const (
	Held   State = "held"   // holding, until Post, Void or its deadline
	Posted State = "posted" // posted: what it held is taken for good
	Voided State = "voided" // voided, by the caller or by its deadline: what it held is back
)

// Info is what Lookup (and Hold) tell of a hold.
type Info struct {
	ID    string
	State State
	// Amount is what the hold holds, in the leaf's unit: units of stock, points, or the
	// discount a coupon grants.
	Amount int64
	// Deadline is when a hold still Held voids itself.
	Deadline time.Time
}

// Holder is the contract: the same verbs for every resource held in two phases. R is what a
// hold asks for (stock lines, points, a coupon).
type Holder[R any] interface {
	// Hold holds r under id for ttl (then it voids itself). Holding the same r under the
	// same id again returns the same hold; after the hold was resolved it fails with an
	// error matching ErrPosted or ErrVoided.
	Hold(ctx context.Context, id string, r R, ttl time.Duration) (Info, error)
	// Post takes what the hold holds for good. Posting again succeeds and changes nothing;
	// a hold gone fails with an error matching ErrGone (ErrVoided if it was voided).
	Post(ctx context.Context, id string) error
	// Void gives what the hold holds back. Voiding again succeeds or fails with an error
	// matching ErrVoided (the leaf decides; both mean "it is back"); a posted hold fails
	// with one matching ErrPosted.
	Void(ctx context.Context, id string) error
	// Lookup tells where the hold stands; an unknown id fails with an error matching ErrGone.
	Lookup(ctx context.Context, id string) (Info, error)
}
