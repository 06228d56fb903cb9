package ledger

import (
	"time"

	"github.com/uptrace/bun"
)

type accountRow struct {
	bun.BaseModel `bun:"table:ledger_accounts,alias:a"`

	UserID    string `bun:"user_id,pk"`
	Available int64  `bun:"available"`
	Held      int64  `bun:"held"`
	// Expiring is the sum of the user's lots: earned points still due to expire.
	Expiring  int64     `bun:"expiring"`
	CreatedAt time.Time `bun:"created_at"`
	UpdatedAt time.Time `bun:"updated_at"`
}

// transferRow is one movement in the journal.
type transferRow struct {
	bun.BaseModel `bun:"table:ledger_transfers,alias:t"`

	Seq            int64     `bun:"seq,pk,autoincrement"`
	ID             string    `bun:"id,nullzero"`
	Kind           EntryType `bun:"kind"`
	UserID         string    `bun:"user_id"`
	Src            Account   `bun:"src"`
	Dst            Account   `bun:"dst"`
	Amount         int64     `bun:"amount"`
	AvailableAfter int64     `bun:"available_after"`
	HeldAfter      int64     `bun:"held_after"`
	ParentID       string    `bun:"parent_id,nullzero"`
	Reference      string    `bun:"reference"`
	Reason         string    `bun:"reason"`
	Refunded       int64     `bun:"refunded"`
	// ExpiresAt is the expiry of an earn, the deadline of a hold.
	ExpiresAt time.Time `bun:"expires_at,nullzero"`
	CreatedAt time.Time `bun:"created_at"`
}

func (t *transferRow) receipt() Receipt {
	return Receipt{
		ID: t.ID, Type: t.Kind, User: t.UserID, Amount: t.Amount,
		Balance: balance(t.AvailableAfter, t.HeldAfter), Time: t.CreatedAt.UTC(),
	}
}

func (t *transferRow) entry() Entry {
	id := t.ID
	if id == "" {
		id = t.ParentID
	}
	var change int64
	if t.Dst == UserAccount(t.UserID) || t.Dst == HeldAccount(t.UserID) {
		change += t.Amount
	}
	if t.Src == UserAccount(t.UserID) || t.Src == HeldAccount(t.UserID) {
		change -= t.Amount
	}
	return Entry{
		ID: id, Type: t.Kind, Amount: t.Amount, Change: change,
		Balance:   balance(t.AvailableAfter, t.HeldAfter),
		Reference: t.Reference, Reason: t.Reason, Time: t.CreatedAt.UTC(),
	}
}

// sameContent reports whether the stored transfer t is what the request draft asks for.
// A refund draft has no user (the spend decides it); a hold draft's deadline is compared as
// a timeout, since the clock has moved on.
func (t *transferRow) sameContent(d *transferRow) bool {
	if t.Kind != d.Kind || t.Amount != d.Amount || t.Reference != d.Reference ||
		t.Reason != d.Reason || t.ParentID != d.ParentID {
		return false
	}
	if d.UserID != "" && (t.UserID != d.UserID || t.Src != d.Src || t.Dst != d.Dst) {
		return false
	}
	if d.Kind == TypeHold {
		return t.ExpiresAt.Sub(t.CreatedAt) == d.ExpiresAt.Sub(d.CreatedAt)
	}
	return t.ExpiresAt.Equal(d.ExpiresAt)
}

type holdRow struct {
	bun.BaseModel `bun:"table:ledger_holds,alias:h"`

	ID         string    `bun:"id,pk"`
	UserID     string    `bun:"user_id"`
	Amount     int64     `bun:"amount"`
	State      HoldState `bun:"state"`
	Captured   int64     `bun:"captured"`
	Deadline   time.Time `bun:"deadline"`
	CreatedAt  time.Time `bun:"created_at"`
	ResolvedAt time.Time `bun:"resolved_at,nullzero"`
	// AvailableAfter and HeldAfter are the user's balance after the hold was resolved:
	// the receipt a repeated Capture or Void returns.
	AvailableAfter int64 `bun:"available_after"`
	HeldAfter      int64 `bun:"held_after"`
	// Refunded is read from the hold's journal row (LookupHold only).
	Refunded int64 `bun:"refunded,scanonly"`
}

// resolution is the receipt of the Capture or Void that resolved h.
func (h *holdRow) resolution() Receipt {
	r := Receipt{ID: h.ID, Type: TypeVoid, User: h.UserID, Amount: h.Amount,
		Balance: balance(h.AvailableAfter, h.HeldAfter), Time: h.ResolvedAt.UTC()}
	if h.State == HoldCaptured {
		r.Type, r.Amount = TypeCapture, h.Captured
	}
	return r
}

type lotRow struct {
	bun.BaseModel `bun:"table:ledger_lots,alias:l"`

	ID        string    `bun:"id,pk"`
	UserID    string    `bun:"user_id"`
	Remaining int64     `bun:"remaining"`
	ExpiresAt time.Time `bun:"expires_at"`
}
