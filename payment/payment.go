package payment

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxIDLen is the longest payment, order or refund ID accepted, in characters. An ID must
// not end with a space (MySQL's collations ignore trailing spaces, so "pay-1 " would be
// taken for "pay-1") nor hold a control character (bun's MySQL dialect drops NUL bytes).
const MaxIDLen = 64

// MaxTokenLen is the longest PayRequest.Token accepted, in characters.
const MaxTokenLen = 255

// Method is a means of payment. CARD and BNPL are settled through a Gateway (Service.Pay);
// POINT and COUPON are settled by the ledger and coupon packages and appear here only in a Plan.
type Method string

// The methods of payment.
const (
	MethodPoint  Method = "POINT"
	MethodCoupon Method = "COUPON"
	MethodCard   Method = "CARD"
	MethodBNPL   Method = "BNPL"
)

// Valid reports whether m is one of the methods above.
func (m Method) Valid() bool {
	switch m {
	case MethodPoint, MethodCoupon, MethodCard, MethodBNPL:
		return true
	}
	return false
}

// ViaGateway reports whether the method is paid through a PG (CARD, BNPL).
func (m Method) ViaGateway() bool { return m == MethodCard || m == MethodBNPL }

// Payment is one charge through the PG and what happened to it.
type Payment struct {
	ID      string
	OrderID string
	// Amount is in minor units of Currency (KRW has none: 1 = 1 won).
	Amount   int64
	Currency string
	Method   Method
	// Token is what the PG charges: a card token or the key of the customer's authorisation.
	// It is stored so that the Reconciler can submit a payment the PG never received.
	Token string
	State State
	// PGReference is the PG's own ID for the payment, once approved.
	PGReference string
	// DeclineCode and DeclineMessage are the PG's reason, once declined.
	DeclineCode    string
	DeclineMessage string
	// Refunded is the total of the succeeded refunds.
	Refunded int64
	// RefundPending is the amount of the refund still with the PG, if any.
	RefundPending int64
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Refundable is how much can still be refunded.
func (p Payment) Refundable() int64 {
	if p.State != StateApproved && p.State != StatePartiallyRefunded {
		return 0
	}
	return p.Amount - p.Refunded - p.RefundPending
}

// PayRequest asks for a payment through the PG. PaymentID is the idempotency key of the whole
// operation: the PG receives it as its own idempotency key, and a repeated Pay with the same
// request continues the same payment instead of starting a new one.
type PayRequest struct {
	PaymentID string
	OrderID   string
	Amount    int64
	Currency  string
	// Method is MethodCard or MethodBNPL.
	Method Method
	// Token is passed to the PG (a card token or authorisation key); it may be empty.
	Token string
}

// Validate checks the request without touching anything, including the rules of its
// method that Plan.Validate checks too (BNPL: KRW only, at least BNPLMinimumKRW), so that
// no caller can charge past them.
func (r PayRequest) Validate() error {
	if err := validID("PaymentID", r.PaymentID); err != nil {
		return err
	}
	if err := validID("OrderID", r.OrderID); err != nil {
		return err
	}
	if r.Amount <= 0 {
		return invalid("Amount", "must be positive")
	}
	if !validCurrency(r.Currency) {
		return invalid("Currency", "must be three upper-case letters (ISO 4217)")
	}
	if !r.Method.ViaGateway() {
		return invalid("Method", "must be CARD or BNPL (points and coupons are not paid through the gateway)")
	}
	if r.Method == MethodBNPL && r.Currency != "KRW" {
		return invalid("Currency", "BNPL is offered in KRW only")
	}
	if r.Method == MethodBNPL && r.Amount < BNPLMinimumKRW {
		return invalid("Amount", fmt.Sprintf("BNPL needs at least %d KRW", BNPLMinimumKRW))
	}
	return CheckToken(r.Token)
}

// matches reports whether p was created by a request equal to r.
func (p Payment) matches(r PayRequest) bool {
	return p.OrderID == r.OrderID && p.Amount == r.Amount && p.Currency == r.Currency &&
		p.Method == r.Method && p.Token == r.Token
}

func validID(field, id string) error {
	if id == "" {
		return invalid(field, "is empty")
	}
	if !utf8.ValidString(id) || utf8.RuneCountInString(id) > MaxIDLen {
		return invalid(field, "must be valid UTF-8 of at most 64 characters")
	}
	if strings.HasSuffix(id, " ") {
		// MySQL's collations ignore trailing spaces: "pay-1 " would find "pay-1".
		return invalid(field, "must not end with a space")
	}
	if strings.ContainsFunc(id, unicode.IsControl) {
		// bun's MySQL dialect drops NUL bytes: "pay\x00x" would be stored as "payx".
		return invalid(field, "must not hold control characters")
	}
	return nil
}

func validCurrency(c string) bool {
	if len(c) != 3 {
		return false
	}
	for i := range 3 {
		if c[i] < 'A' || c[i] > 'Z' {
			return false
		}
	}
	return true
}

// CheckToken validates a card token or BNPL authorisation (PayRequest.Token): valid UTF-8
// of at most MaxTokenLen characters, without control characters (no PG issues them, and a
// NUL is not stored as given). Callers that take a token before a PayRequest is built
// (commerce's Pay and TopUp) check it with the same rule.
func CheckToken(token string) error {
	if utf8.RuneCountInString(token) > MaxTokenLen || !utf8.ValidString(token) || strings.ContainsFunc(token, unicode.IsControl) {
		return invalid("Token", "must be valid UTF-8 of at most 255 characters, without control characters")
	}
	return nil
}
