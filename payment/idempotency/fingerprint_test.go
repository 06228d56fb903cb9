package idempotency_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/payment/idempotency"
)

func TestFingerprintRequest(t *testing.T) {
	base := idempotency.FingerprintRequest("POST", "/v1/payments", []byte(`{"order":"o-1","amount":15000,"items":[{"sku":"a","qty":1},{"sku":"b","qty":2}]}`))
	assert.Len(t, string(base), 64)
	for _, tc := range []struct {
		name         string
		method, path string
		body         string
		same         bool
	}{
		{"identical", "POST", "/v1/payments", `{"order":"o-1","amount":15000,"items":[{"sku":"a","qty":1},{"sku":"b","qty":2}]}`, true},
		{"key order and whitespace", "post", "/v1/payments", "{\n \"items\": [ {\"qty\":1, \"sku\":\"a\"}, {\"qty\":2,\"sku\":\"b\"} ],\n \"amount\": 15000, \"order\": \"o-1\"}\n", true},
		{"other amount", "POST", "/v1/payments", `{"order":"o-1","amount":15001,"items":[{"sku":"a","qty":1},{"sku":"b","qty":2}]}`, false},
		{"number written otherwise", "POST", "/v1/payments", `{"order":"o-1","amount":15000.0,"items":[{"sku":"a","qty":1},{"sku":"b","qty":2}]}`, false},
		{"array order", "POST", "/v1/payments", `{"order":"o-1","amount":15000,"items":[{"sku":"b","qty":2},{"sku":"a","qty":1}]}`, false},
		{"extra field", "POST", "/v1/payments", `{"order":"o-1","amount":15000,"items":[{"sku":"a","qty":1},{"sku":"b","qty":2}],"note":null}`, false},
		{"other path", "POST", "/v1/refunds", `{"order":"o-1","amount":15000,"items":[{"sku":"a","qty":1},{"sku":"b","qty":2}]}`, false},
		{"other method", "PUT", "/v1/payments", `{"order":"o-1","amount":15000,"items":[{"sku":"a","qty":1},{"sku":"b","qty":2}]}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := idempotency.FingerprintRequest(tc.method, tc.path, []byte(tc.body))
			assert.Equal(t, tc.same, got == base)
		})
	}

	// Parts are length-prefixed: moving bytes between them changes the fingerprint.
	assert.NotEqual(t,
		idempotency.FingerprintRequest("POST", "/a", []byte("b")),
		idempotency.FingerprintRequest("POST", "/ab", nil))
	// A body that is not one JSON value is hashed as it is.
	assert.NotEqual(t,
		idempotency.FingerprintRequest("POST", "/a", []byte("amount=1&order=2")),
		idempotency.FingerprintRequest("POST", "/a", []byte("order=2&amount=1")))
	assert.NotEqual(t,
		idempotency.FingerprintRequest("POST", "/a", []byte(`{"a":1} {"b":2}`)),
		idempotency.FingerprintRequest("POST", "/a", []byte(`{"a":1}  {"b":2}`)))
}

func TestFingerprintValue(t *testing.T) {
	type payReq struct {
		Order  string `json:"order"`
		Amount int64  `json:"amount"`
	}
	a, err := idempotency.FingerprintValue(payReq{Order: "o-1", Amount: 15000})
	require.NoError(t, err)
	b, err := idempotency.FingerprintValue(map[string]any{"amount": 15000, "order": "o-1"})
	require.NoError(t, err)
	assert.Equal(t, a, b, "equal content, different Go types")
	c, err := idempotency.FingerprintValue(payReq{Order: "o-1", Amount: 15001})
	require.NoError(t, err)
	assert.NotEqual(t, a, c)

	_, err = idempotency.FingerprintValue(func() {})
	assert.ErrorIs(t, err, idempotency.ErrInvalid)
}

func TestCanonicalJSON(t *testing.T) {
	got, err := idempotency.CanonicalJSON([]byte(" {\"b\": [1, 2.50, \"<&>\"], \"a\": {\"d\": null, \"c\": true}} "))
	require.NoError(t, err)
	assert.Equal(t, `{"a":{"c":true,"d":null},"b":[1,2.50,"<&>"]}`, string(got))
	for _, bad := range []string{"", "{", `{"a":1}}`, `1 2`, "nul"} {
		_, err := idempotency.CanonicalJSON([]byte(bad))
		assert.Error(t, err, bad)
	}
}

func TestHTTPStatus(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
	}{
		{&idempotency.InvalidError{Field: "key", Reason: "empty"}, 400},
		{&idempotency.KeyError{Err: idempotency.ErrKeyReused}, 422},
		{&idempotency.KeyError{Err: idempotency.ErrInProgress}, 409},
		{&idempotency.KeyError{Err: idempotency.ErrLockLost}, 409},
	} {
		status, ok := idempotency.HTTPStatus(tc.err)
		assert.True(t, ok, "%v", tc.err)
		assert.Equal(t, tc.status, status, "%v", tc.err)
	}
	_, ok := idempotency.HTTPStatus(assert.AnError)
	assert.False(t, ok)
}

func TestRefID(t *testing.T) {
	a := idempotency.Ref{Scope: "a", Key: "b:c"}.ID()
	assert.Len(t, a, 64)
	assert.NotEqual(t, a, idempotency.Ref{Scope: "a:b", Key: "c"}.ID())
	assert.Equal(t, a, idempotency.Ref{Scope: "a", Key: "b:c"}.ID())
}

func TestEventString(t *testing.T) {
	assert.Equal(t, "claimed", idempotency.EventClaimed.String())
	assert.Equal(t, "lock_lost", idempotency.EventLockLost.String())
	assert.Equal(t, "unknown", idempotency.Event(0).String())
	assert.Equal(t, "unknown", idempotency.Event(99).String())
}
