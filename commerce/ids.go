package commerce

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Every ID the flows hand to a leaf is derived from the order (or top-up) ID, itself
// derived from the user and the idempotency key, so that a retry or a recovery after a
// crash repeats exactly the calls of the first attempt and every leaf recognises them.

// digest returns the first n hex digits of the SHA-256 of the parts, each ended by a NUL
// (no part contains one, so different parts never give the same input).
func digest(n int, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:n]
}

// orderID is "ord_" and 24 hex digits (96 bits) of the user and key.
func orderID(user, key string) string { return "ord_" + digest(24, "order", user, key) }

// topUpID is "top_" and 24 hex digits of the user and key.
func topUpID(user, key string) string { return "top_" + digest(24, "topup", user, key) }

func holdID(order string) string         { return "hold-" + order }
func rewardID(order string) string       { return "reward-" + order }
func pointsRefundID(order string) string { return "points-refund-" + order }
func paymentID(order string) string      { return "pay-" + order }

// nextPaymentID names the payment of an order's next attempt after last, its previous
// (abandoned) attempt's payment, "" for none: "pay-<order>" for the first, as before attempts
// were numbered, then "pay-<order>-2", "pay-<order>-3"..., so that an abandoned attempt's
// ID, the PG's idempotency key, is never sent again for another attempt.
func nextPaymentID(order, last string) string {
	if last == "" {
		return paymentID(order)
	}
	n := 1
	if rest, ok := strings.CutPrefix(last, paymentID(order)+"-"); ok {
		n, _ = strconv.Atoi(rest) // the order's own numbering: never malformed
	}
	return paymentID(order) + "-" + strconv.Itoa(n+1)
}

// refundID names the refund of a payment: attempt 0 is the refund of an approval that came
// too late, attempt n ≥ 1 the refund of the n-th cancellation of a paid order.
func refundID(order string, attempt int) string {
	return "refund-" + order + "-" + strconv.Itoa(attempt)
}

// lateRefundID names the refund of an approval that came too late: "refund-<order>-0" for
// the first, "refund-<order>-0-<n+1>" for the next after n rejected ones. (An order whose
// approval is refunded so is never paid, so never cancelled: the n of its cancel_attempt
// counts these refunds.)
func lateRefundID(order string, rejected int) string {
	if rejected == 0 {
		return refundID(order, 0)
	}
	return refundID(order, 0) + "-" + strconv.Itoa(rejected+1)
}

func clawbackID(order string, attempt int) string {
	return "clawback-" + order + "-" + strconv.Itoa(attempt)
}

func clawbackRevertID(order string, attempt int) string {
	return "clawback-revert-" + order + "-" + strconv.Itoa(attempt)
}

// EventID is the ID of the event of type typ about an aggregate (an order, a top-up, a
// coupon), whose ID is its key: "<aggregate>-<type>". Each is written at most once, so a
// consumer can tell an event commerce wrote from another producer's.
func EventID(aggregate, typ string) string { return aggregate + "-" + typ }

// fingerprint hashes the canonical form of a request.
func fingerprint(parts ...string) string { return digest(64, parts...) }

// ValidateUserID checks a user ID as every operation does: 1 to MaxIDLen bytes of printable
// ASCII without spaces, else a *ValidationError (ErrInvalidRequest). A caller that takes
// user IDs from outside (a token's subject, say) can refuse a bad one before anything else.
func ValidateUserID(id string) error { return checkID("UserID", id) }

// ValidateIdempotencyKey checks an idempotency key as PlaceOrder, Pay and TopUp do (see
// checkKey), else a *ValidationError (ErrInvalidRequest): for a caller keeping keys of its
// own in the same kind of column, as the cart does.
func ValidateIdempotencyKey(key string) error { return checkKey(key) }

// checkID validates an ID that every leaf accepts: 1-64 printable ASCII bytes.
func checkID(field, id string) error {
	if id == "" {
		return invalid(field, "is empty")
	}
	if len(id) > MaxIDLen {
		return invalid(field, "is longer than 64 bytes")
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return invalid(field, "must be printable ASCII without spaces")
		}
	}
	return nil
}

// checkKey validates an idempotency key: 1-255 bytes without control characters.
func checkKey(key string) error {
	if key == "" {
		return invalid("IdempotencyKey", "is empty")
	}
	if len(key) > MaxKeyLen {
		return invalid("IdempotencyKey", "is longer than 255 bytes")
	}
	if !utf8.ValidString(key) {
		// Stored, it would be another string (U+FFFD for each invalid byte): a retry would
		// not find its own request.
		return invalid("IdempotencyKey", "is not valid UTF-8")
	}
	if strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return invalid("IdempotencyKey", "contains a control character")
	}
	if strings.HasSuffix(key, " ") {
		// MySQL's collations ignore trailing spaces: "k " would find the request of "k".
		return invalid("IdempotencyKey", "ends with a space")
	}
	return nil
}
