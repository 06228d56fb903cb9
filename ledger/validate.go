package ledger

import (
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits on arguments.
const (
	// MaxIDLen is the longest transfer, hold or user ID, in bytes.
	MaxIDLen = 64
	// MaxReferenceLen is the longest reference, in characters.
	MaxReferenceLen = 128
	// MaxReasonLen is the longest adjustment reason, in characters.
	MaxReasonLen = 255
	// MaxAmount is the largest amount of one operation.
	MaxAmount = 1_000_000_000_000_000
	// MaxBalance bounds a user's points, available and held together: an earn or a
	// positive adjustment (points given) that would take them past it is refused with
	// *BalanceLimitError. A charge and a refund (points settling money already paid, or
	// given back after being spent) may take them past it, up to twice MaxBalance: a
	// caller checks MaxBalance before taking the money (as commerce's top-up does), and the
	// headroom lets what was in flight, and every cancellation, complete. Only thousands of
	// charges of MaxAmount past MaxBalance, or a history of spending and recharging at the
	// limit as often, reach twice it. Both bounds keep every balance, total and receipt far
	// from overflowing int64 (about 9.2×10^18), so that a hold can always be voided or
	// expired.
	MaxBalance = 1_000 * MaxAmount
	// MaxHoldTimeout is the longest hold.
	MaxHoldTimeout = 30 * 24 * time.Hour
	// MaxHistoryLimit is the largest page of History; DefaultHistoryLimit is used for 0.
	MaxHistoryLimit     = 1000
	DefaultHistoryLimit = 50
)

// maxSettledBalance bounds a user's points after a charge or a refund (see MaxBalance).
const maxSettledBalance = 2 * MaxBalance

// maxExpiry bounds how far in the future earned points may expire.
const maxExpiry = 100 * 365 * 24 * time.Hour

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// checkID validates an ID: 1 to MaxIDLen bytes of UTF-8 without control characters.
func checkID(field, s string) error {
	switch {
	case s == "":
		return invalid(field, "empty")
	case len(s) > MaxIDLen:
		return invalid(field, "%d bytes, at most %d allowed", len(s), MaxIDLen)
	case !utf8.ValidString(s):
		return invalid(field, "not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return invalid(field, "contains control character %U", r)
		}
	}
	return nil
}

// checkText validates free text: UTF-8, no NUL, at most max characters.
func checkText(field, s string, max int) error {
	switch {
	case !utf8.ValidString(s):
		return invalid(field, "not valid UTF-8")
	case utf8.RuneCountInString(s) > max:
		return invalid(field, "longer than %d characters", max)
	}
	for _, r := range s {
		if r == 0 {
			return invalid(field, "contains NUL")
		}
	}
	return nil
}

func checkAmount(field string, n int64) error {
	if n <= 0 || n > MaxAmount {
		return invalid(field, "%d is not in 1..%d", n, int64(MaxAmount))
	}
	return nil
}

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
