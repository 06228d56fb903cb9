package coupon

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Kind is how a coupon discounts an order.
type Kind string

// The kinds of discount.
const (
	// FixedAmount takes Terms.Amount minor units off the order.
	FixedAmount Kind = "fixed"
	// PercentOff takes Terms.Percent percent off the order, rounded down, capped at
	// Terms.MaxDiscount when that is set.
	PercentOff Kind = "percent"
)

// Limits on template fields.
const (
	// MaxIDLength bounds every ID (template, user, request, coupon, order), in bytes.
	MaxIDLength = 64
	// MaxNameLength bounds a template's name, in bytes.
	MaxNameLength = 200
	// MaxPerUserLimit bounds Template.PerUserLimit.
	MaxPerUserLimit = 1000
	// MaxTotalQuantity bounds Template.TotalQuantity (0 is unlimited): every count and
	// place stays exact in every issuer (Redis scripts count in doubles, and write numbers
	// past 10^14 in exponent form).
	MaxTotalQuantity = 1_000_000_000_000
	// MaxValidDays bounds Template.ValidDays (100 years).
	MaxValidDays = 36500
)

// Terms are what a coupon gives and when it applies. A template defines them and every
// coupon issued from it carries a copy, so a coupon's discount never changes after issue.
type Terms struct {
	Kind Kind
	// Amount is the discount of a FixedAmount coupon, in minor units (> 0). Zero for PercentOff.
	Amount int64
	// Percent is the discount of a PercentOff coupon, 1..100. Zero for FixedAmount.
	Percent int64
	// MaxDiscount caps a PercentOff discount, in minor units; 0 means no cap. Zero for
	// FixedAmount.
	MaxDiscount int64
	// MinOrderAmount is the smallest order amount the coupon applies to (0 = any).
	MinOrderAmount int64
}

// Template describes a coupon campaign. Templates are immutable once created.
type Template struct {
	// ID is chosen by the caller (1..MaxIDLength bytes).
	ID string
	// Name is shown in wallets (optional, up to MaxNameLength bytes).
	Name string
	Terms
	// IssueStart and IssueEnd bound the issue window [IssueStart, IssueEnd); zero means
	// open on that side. Issuance also ends at UseBy.
	IssueStart time.Time
	IssueEnd   time.Time
	// UsableFrom is when issued coupons become usable (zero = as soon as issued).
	UsableFrom time.Time
	// UseBy is the absolute date after which coupons expire (zero = none).
	UseBy time.Time
	// ValidDays makes each coupon expire that many days (×24h) after its issue (0 = none).
	// With UseBy as well, the earlier of the two applies. With neither, coupons never expire.
	ValidDays int
	// TotalQuantity is how many coupons may be issued in all (0 = unlimited), at most
	// MaxTotalQuantity.
	TotalQuantity int64
	// PerUserLimit is how many coupons one user may hold (0 means the default, 1).
	PerUserLimit int
	// CreatedAt is set by CreateTemplate.
	CreatedAt time.Time
}

// validateID checks a caller-supplied ID.
func validateID(field, id string) error {
	switch {
	case id == "":
		return invalidArg(field, "is empty")
	case len(id) > MaxIDLength:
		return invalidArg(field, "is longer than 64 bytes")
	case !utf8.ValidString(id):
		return invalidArg(field, "is not valid UTF-8")
	case strings.ContainsFunc(id, unicode.IsControl):
		return invalidArg(field, "contains a control character")
	case strings.HasSuffix(id, " "):
		// MySQL's collations ignore trailing spaces: "camp " would be taken for "camp".
		return invalidArg(field, "ends with a space")
	}
	return nil
}

// normalize validates t and returns it with defaults applied and times in UTC at
// microsecond precision (what MySQL DATETIME(6) keeps).
func (t Template) normalize() (Template, error) {
	if err := validateID("ID", t.ID); err != nil {
		return t, invalidTemplate("ID", err.(*ValidationError).Reason)
	}
	switch {
	case len(t.Name) > MaxNameLength || !utf8.ValidString(t.Name):
		return t, invalidTemplate("Name", "is longer than 200 bytes or not valid UTF-8")
	case strings.ContainsFunc(t.Name, unicode.IsControl):
		// It is copied into every coupon issued and shown to buyers.
		return t, invalidTemplate("Name", "contains a control character")
	}
	switch t.Kind {
	case FixedAmount:
		if t.Amount <= 0 {
			return t, invalidTemplate("Amount", "must be positive for a fixed-amount coupon")
		}
		if t.Percent != 0 || t.MaxDiscount != 0 {
			return t, invalidTemplate("Percent", "and MaxDiscount must be zero for a fixed-amount coupon")
		}
	case PercentOff:
		if t.Percent < 1 || t.Percent > 100 {
			return t, invalidTemplate("Percent", "must be between 1 and 100")
		}
		if t.Amount != 0 {
			return t, invalidTemplate("Amount", "must be zero for a percent-off coupon")
		}
		if t.MaxDiscount < 0 {
			return t, invalidTemplate("MaxDiscount", "must not be negative")
		}
	default:
		return t, invalidTemplate("Kind", "must be FixedAmount or PercentOff")
	}
	if t.MinOrderAmount < 0 {
		return t, invalidTemplate("MinOrderAmount", "must not be negative")
	}
	if t.TotalQuantity < 0 || t.TotalQuantity > MaxTotalQuantity {
		return t, invalidTemplate("TotalQuantity", "must be between 0 (unlimited) and 10^12")
	}
	if t.PerUserLimit < 0 || t.PerUserLimit > MaxPerUserLimit {
		return t, invalidTemplate("PerUserLimit", "must be between 0 (default 1) and 1000")
	}
	if t.PerUserLimit == 0 {
		t.PerUserLimit = 1
	}
	if t.ValidDays < 0 || t.ValidDays > MaxValidDays {
		return t, invalidTemplate("ValidDays", "must be between 0 (none) and 36500")
	}
	t.IssueStart, t.IssueEnd = utc(t.IssueStart), utc(t.IssueEnd)
	t.UsableFrom, t.UseBy = utc(t.UsableFrom), utc(t.UseBy)
	for _, f := range []struct {
		name string
		at   time.Time
	}{{"IssueStart", t.IssueStart}, {"IssueEnd", t.IssueEnd}, {"UsableFrom", t.UsableFrom}, {"UseBy", t.UseBy}} {
		if !storable(f.at) {
			return t, invalidTemplate(f.name, "must fall within years 1 to 9999 in UTC")
		}
	}
	if !t.IssueEnd.IsZero() && !t.IssueEnd.After(t.IssueStart) {
		return t, invalidTemplate("IssueEnd", "must be after IssueStart")
	}
	if !t.UseBy.IsZero() {
		if !t.UseBy.After(t.IssueStart) {
			return t, invalidTemplate("UseBy", "must be after IssueStart")
		}
		if !t.UseBy.After(t.UsableFrom) {
			return t, invalidTemplate("UseBy", "must be after UsableFrom")
		}
	}
	return t, nil
}

// sameTerms reports whether two normalized templates describe the same campaign
// (CreatedAt aside).
func (t Template) sameTerms(o Template) bool {
	return t.ID == o.ID && t.Name == o.Name && t.Terms == o.Terms &&
		t.IssueStart.Equal(o.IssueStart) && t.IssueEnd.Equal(o.IssueEnd) &&
		t.UsableFrom.Equal(o.UsableFrom) && t.UseBy.Equal(o.UseBy) &&
		t.ValidDays == o.ValidDays && t.TotalQuantity == o.TotalQuantity && t.PerUserLimit == o.PerUserLimit
}

// checkWindow returns an IssueError when now is outside the issue window.
func (t Template) checkWindow(now time.Time, userID, requestID string) error {
	reject := func(err error, at time.Time) error {
		return &IssueError{Err: err, TemplateID: t.ID, UserID: userID, RequestID: requestID, At: at}
	}
	if !t.IssueStart.IsZero() && now.Before(t.IssueStart) {
		return reject(ErrNotStarted, t.IssueStart)
	}
	if !t.IssueEnd.IsZero() && !now.Before(t.IssueEnd) {
		return reject(ErrEnded, t.IssueEnd)
	}
	if !t.UseBy.IsZero() && !now.Before(t.UseBy) {
		return reject(ErrEnded, t.UseBy)
	}
	return nil
}

// expiry returns when a coupon issued at issuedAt expires (zero = never).
func (t Template) expiry(issuedAt time.Time) time.Time {
	exp := t.UseBy
	if t.ValidDays > 0 {
		if d := issuedAt.Add(time.Duration(t.ValidDays) * 24 * time.Hour); exp.IsZero() || d.Before(exp) {
			exp = d
		}
	}
	return exp
}

// storable reports whether t, in UTC, falls within years 1 to 9999, as every column, and
// JSON, takes it: "9999-12-31T23:59:59-10:00" is year 10000 in UTC.
func storable(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 1 && y <= 9999
}

// utc returns t in UTC at microsecond precision; the zero time stays zero.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}
