package idempotency

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on what identifies a request.
const (
	// MaxKeyLength bounds an idempotency key, in characters (Stripe's limit).
	MaxKeyLength = 255
	// MaxScopeLength bounds a scope, in characters.
	MaxScopeLength = 255
	// MaxFingerprintLength bounds a fingerprint, in bytes. The package's own fingerprints
	// are 64 bytes (hex SHA-256).
	MaxFingerprintLength = 128
)

// validate checks what a claim is made of: scope and key are 1..255 characters of UTF-8
// without control characters (they travel in HTTP headers and logs), the fingerprint 1..128
// bytes of the same.
func validate(ref Ref, fp Fingerprint) error {
	if err := validText("scope", ref.Scope, utf8.RuneCountInString(ref.Scope), MaxScopeLength, "characters"); err != nil {
		return err
	}
	if err := validText("key", ref.Key, utf8.RuneCountInString(ref.Key), MaxKeyLength, "characters"); err != nil {
		return err
	}
	return validText("fingerprint", string(fp), len(fp), MaxFingerprintLength, "bytes")
}

func validText(field, s string, n, limit int, unit string) error {
	switch {
	case s == "":
		return &InvalidError{Field: field, Reason: "empty"}
	case !utf8.ValidString(s):
		return &InvalidError{Field: field, Reason: "not valid UTF-8"}
	case n > limit:
		return &InvalidError{Field: field, Reason: fmt.Sprintf("%d %s long, more than %d", n, unit, limit)}
	case hasControl(s):
		return &InvalidError{Field: field, Reason: "contains a control character"}
	}
	return nil
}

func hasControl(s string) bool { return strings.IndexFunc(s, unicode.IsControl) >= 0 }
