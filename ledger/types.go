package ledger

import "time"

// Account names one side of a transfer in the journal. A user has two accounts,
// UserAccount (points they can use) and HeldAccount (points set aside by open holds); the
// system accounts are the constants below. The balance of an account is what the journal
// moved into it minus what it moved out, so the balances of all accounts sum to zero.
type Account string

// The system accounts. They have no row of their own: their balances are derived from the
// journal (see the package documentation, "Hot accounts").
const (
	// AccountCharged is where charged (bought) points come from; its balance is minus the
	// points ever charged.
	AccountCharged Account = "@charged"
	// AccountRewarded is where earned (reward) points come from.
	AccountRewarded Account = "@rewarded"
	// AccountRedeemed receives spent and captured points and pays refunds back out.
	AccountRedeemed Account = "@redeemed"
	// AccountExpired receives earned points that expired.
	AccountExpired Account = "@expired"
	// AccountAdjusted is the other side of every administrative adjustment.
	AccountAdjusted Account = "@adjusted"
)

// UserAccount is the account of the points user can spend.
func UserAccount(user string) Account { return Account("user:" + user) }

// HeldAccount is the account of user's points held by open holds.
func HeldAccount(user string) Account { return Account("held:" + user) }

// EntryType says what a transfer in the journal did.
type EntryType string

// The entry types. The first six are made by the operations of the same name; the others
// are made when a hold is resolved or earned points expire.
const (
	TypeCharge EntryType = "charge" // Charge: @charged → user
	TypeEarn   EntryType = "earn"   // Earn: @rewarded → user
	TypeSpend  EntryType = "spend"  // Spend: user → @redeemed
	TypeRefund EntryType = "refund" // Refund: @redeemed → user
	TypeAdjust EntryType = "adjust" // Adjust: @adjusted → user, or user → @adjusted
	TypeHold   EntryType = "hold"   // Hold: user → held

	TypeCapture    EntryType = "capture"     // Capture: held → @redeemed
	TypeRelease    EntryType = "release"     // Capture of less than held: the remainder, held → user
	TypeVoid       EntryType = "void"        // Void: held → user
	TypeHoldExpire EntryType = "hold_expire" // a hold past its deadline, released by Sweep: held → user
	TypeExpire     EntryType = "expire"      // earned points past their expiry, by Sweep: user → @expired
)

// HoldState is where a hold is in its life: pending until exactly one of Capture, Void or
// expiry resolves it.
type HoldState string

// The hold states.
const (
	HoldPending  HoldState = "pending"
	HoldCaptured HoldState = "captured"
	HoldVoided   HoldState = "voided"
	HoldExpired  HoldState = "expired"
)

// Balance is a user's points. Total = Available + Held.
type Balance struct {
	// Available can be spent or held; it never goes below zero.
	Available int64
	// Held is set aside by open holds until they are captured, voided or expire.
	Held int64
	// Total is Available + Held.
	Total int64
}

func balance(available, held int64) Balance {
	return Balance{Available: available, Held: held, Total: available + held}
}

// Receipt is the result of an operation: what it moved and the user's balance right after
// it. Repeating an operation with the same ID and content returns the original receipt.
type Receipt struct {
	// ID is the transfer ID the caller gave (the hold ID for Hold, Capture and Void).
	ID string
	// Type is what the operation recorded: for Capture, TypeCapture (a remainder given
	// back is a separate TypeRelease entry in the history).
	Type EntryType
	// User is the user whose points moved.
	User string
	// Amount is the points moved: for Capture the captured amount, for Void the amount
	// given back; for Adjust the absolute value of the delta.
	Amount int64
	// Balance is the user's balance right after the operation.
	Balance Balance
	// Time is when the operation took effect, by the ledger's clock.
	Time time.Time
}

// Entry is one line of a user's history.
type Entry struct {
	// ID is the transfer ID: the caller's, or for capture, release, void and hold_expire
	// entries the hold's, for expire entries the earn's.
	ID string
	// Type is what the transfer did.
	Type EntryType
	// Amount is the points the transfer moved (always positive).
	Amount int64
	// Change is the signed change of the user's total balance: positive for points coming
	// in, negative for points going out, zero for hold, release, void and hold_expire,
	// which only move points between Available and Held.
	Change int64
	// Balance is the user's balance right after the transfer.
	Balance Balance
	// Reference is the caller's reference (an order ID, a payment ID), if any.
	Reference string
	// Reason is the reason of an adjustment.
	Reason string
	// Time is when the transfer took effect.
	Time time.Time
}

// HistoryPage is one page of a user's history, newest first.
type HistoryPage struct {
	// Entries are newest first.
	Entries []Entry
	// Next is the cursor of the following (older) page, or "" when this page is the last.
	Next string
}

// Expiry is a lot of earned points that will expire, as listed by Expiring.
type Expiry struct {
	// EarnID is the ID of the Earn that created the lot.
	EarnID string
	// Amount is what is left of the lot: not yet spent, captured or expired.
	Amount int64
	// ExpiresAt is when the lot expires.
	ExpiresAt time.Time
}

// HoldInfo describes a hold, as returned by LookupHold.
type HoldInfo struct {
	ID     string
	User   string
	Amount int64
	State  HoldState
	// Captured is the amount captured (HoldCaptured only).
	Captured int64
	// Refunded is how much of the captured amount has been refunded.
	Refunded  int64
	Deadline  time.Time
	CreatedAt time.Time
	// ResolvedAt is when the hold was captured, voided or expired; zero while pending.
	ResolvedAt time.Time
}

// ChargeRequest adds bought points to a user's balance (after a successful payment).
type ChargeRequest struct {
	// ID identifies the transfer (at most 64 bytes); repeating it repeats the result.
	ID string
	// User is the user's ID (at most 64 bytes). The account is created on first use.
	User string
	// Amount is positive, at most MaxAmount.
	Amount int64
	// Reference is optional (at most 128 characters), e.g. the payment ID.
	Reference string
}

// EarnRequest adds reward points to a user's balance, optionally expiring.
type EarnRequest struct {
	ID     string
	User   string
	Amount int64
	// Reference is optional, e.g. the order the reward is for.
	Reference string
	// ExpiresAt is when the points expire; zero means never. It must be in the future,
	// except in a repeat of an earn already made, which returns its receipt.
	ExpiresAt time.Time
}

// SpendRequest takes points from a user's available balance.
type SpendRequest struct {
	ID        string
	User      string
	Amount    int64
	Reference string
}

// RefundRequest gives back points of an earlier Spend, or of a captured Hold.
type RefundRequest struct {
	ID string
	// SpendID is the ID of the Spend, or of the Hold that was captured. The refunds of one
	// spend never add up to more than it took.
	SpendID   string
	Amount    int64
	Reference string
}

// AdjustRequest corrects a user's balance by hand.
type AdjustRequest struct {
	ID   string
	User string
	// Delta is added to the user's available points; it is not zero, and a negative delta
	// must be covered by the available points.
	Delta int64
	// Reason is required (at most 255 characters).
	Reason    string
	Reference string
}
