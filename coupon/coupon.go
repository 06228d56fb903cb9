package coupon

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// State is where a coupon is in its life.
type State string

// Coupon states. Available, Reserved and Used are stored; Expired is computed when a coupon
// is read: an available coupon whose ExpiresAt has passed (by the Service's clock) is
// Expired. A reserved coupon stays Reserved past its expiry: the order that holds it was
// placed in time and may still confirm it.
const (
	StateAvailable State = "available"
	StateReserved  State = "reserved"
	StateUsed      State = "used"
	StateExpired   State = "expired"
)

// Coupon is one issued coupon.
type Coupon struct {
	// ID is generated at issue (32 hex digits).
	ID         string
	TemplateID string
	// Name is the template's name at issue.
	Name   string
	UserID string
	// Ordinal numbers the user's coupons of the template, 1..PerUserLimit.
	Ordinal int
	// RequestID is the idempotency key of the Issue call that created the coupon.
	RequestID string
	// Place is the coupon's place in a limited template's total, 1..TotalQuantity, unique
	// per template in SQL (0 for a template without a total).
	Place int64
	// Terms are copied from the template at issue.
	Terms
	State State
	// OrderID is the order that reserved or used the coupon ("" when available).
	OrderID    string
	IssuedAt   time.Time
	UsableFrom time.Time // zero: usable from issue
	ExpiresAt  time.Time // zero: never expires
	UsedAt     time.Time // zero unless used
}

// Holding is a coupon as an issuer backend sees it: which user holds which ordinal of a
// template, issued under which request ID.
type Holding struct {
	UserID    string
	Ordinal   int
	Place     int64 // 0: none (a template without a total)
	RequestID string
}

// RedemptionState is where an order's use of a coupon is.
type RedemptionState string

// Redemption states: Reserved → Confirmed, Reserved → Restored, Confirmed → Restored (the
// order was cancelled), Reserved → Expired (its hold deadline passed; Sweep).
const (
	RedemptionReserved  RedemptionState = "reserved"
	RedemptionConfirmed RedemptionState = "confirmed"
	RedemptionRestored  RedemptionState = "restored"
	RedemptionExpired   RedemptionState = "expired"
)

// Redemption is one order's use of one coupon.
type Redemption struct {
	OrderID     string
	CouponID    string
	UserID      string
	TemplateID  string
	OrderAmount int64
	// Discount is what the coupon takes off OrderAmount, fixed at Reserve.
	Discount int64
	State    RedemptionState
	// HoldDeadline is when an unconfirmed reservation restores itself (zero = never).
	HoldDeadline time.Time
	ReservedAt   time.Time
	// ResolvedAt is when the redemption was last confirmed, restored or expired.
	ResolvedAt time.Time
}

// newCoupon builds the coupon that an issue of tpl to userID creates.
func newCoupon(tpl Template, userID, requestID string, taken Taken, now time.Time) Coupon {
	return Coupon{
		ID:         newID(),
		TemplateID: tpl.ID,
		Name:       tpl.Name,
		UserID:     userID,
		Ordinal:    taken.Ordinal,
		Place:      taken.Place,
		RequestID:  requestID,
		Terms:      tpl.Terms,
		State:      StateAvailable,
		IssuedAt:   now,
		UsableFrom: tpl.UsableFrom,
		ExpiresAt:  tpl.expiry(now),
	}
}

// effectiveState returns the state as callers see it at now.
func (c Coupon) effectiveState(now time.Time) State {
	if c.State == StateAvailable && c.expired(now) {
		return StateExpired
	}
	return c.State
}

func (c Coupon) expired(now time.Time) bool {
	return !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt)
}

// newID returns 128 random bits in hex.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b[:])
}
