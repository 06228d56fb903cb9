package idempotency

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Fingerprint identifies the content of a request, so a key reused for a different request
// is recognised. Any caller-computed value of 1..MaxFingerprintLength bytes will do; the
// helpers below return the hex SHA-256 of a canonical form (64 bytes).
type Fingerprint string

// FingerprintRequest fingerprints an HTTP-style request: the method (case-insensitive), the
// target (path, plus the query if it matters — it is used as given) and the body. A body
// that is one valid JSON value is canonicalised first (object keys sorted, insignificant
// whitespace removed, numbers kept as written), so a client that re-serialises the same
// request with another key order still matches; any other body is hashed as it is.
func FingerprintRequest(method, target string, body []byte) Fingerprint {
	if c, err := CanonicalJSON(body); err == nil {
		body = c
	}
	return hash("request", []byte(strings.ToUpper(method)), []byte(target), body)
}

// FingerprintValue fingerprints any value by its canonical JSON (see CanonicalJSON), so
// equal content gives an equal fingerprint whatever Go type carries it (a struct or a
// map). It fails only when v cannot be encoded as JSON.
func FingerprintValue(v any) (Fingerprint, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return "", &InvalidError{Field: "fingerprint", Reason: err.Error()}
	}
	c, err := CanonicalJSON(raw)
	if err != nil {
		return "", &InvalidError{Field: "fingerprint", Reason: err.Error()}
	}
	return hash("value", c), nil
}

// CanonicalJSON returns the canonical form of one JSON value: object keys sorted, no
// insignificant whitespace, numbers exactly as written (1.0 and 1 stay different). If an
// object repeats a key, the last occurrence wins, as in encoding/json. It fails on anything
// but exactly one JSON value.
func CanonicalJSON(data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("idempotency: data after the JSON value")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// hash returns the hex SHA-256 of a label and length-prefixed parts, so no two different
// sequences of parts hash alike.
func hash(label string, parts ...[]byte) Fingerprint {
	h := sha256.New()
	var n [8]byte
	for _, p := range append([][]byte{[]byte(label)}, parts...) {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	return Fingerprint(hex.EncodeToString(h.Sum(nil)))
}
