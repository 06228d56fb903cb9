package server_test

import (
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// goInternals matches what encoding/json says of the server's own types: "Go struct field
// Claims.RegisteredClaims.sub", "LineJSON.qty", "of type int64".
var goInternals = regexp.MustCompile(`Go struct|Go value|JSON\.|Claims\.|of type (u?int|float|string|bool)`)

// TestProblemsNameNoGoTypes: a body or a token whose field holds a value of the wrong kind
// is 400 malformed_request (401 invalid_token), naming the field as the client wrote it,
// and not the server's Go types and struct fields, which are nobody's business outside.
func TestProblemsNameNoGoTypes(t *testing.T) {
	a := start(t, embedded, nil)
	setup(t, a, "p1", 9000, 5)
	alice := token(t, "alice", false)
	for name, body := range map[string]string{
		"qty a string":    `{"lines":[{"product_id":"p1","qty":"1"}]}`,
		"lines an object": `{"lines":{"product_id":"p1"}}`,
		"coupon a number": `{"lines":[{"product_id":"p1","qty":1}],"coupon_id":7}`,
	} {
		p := expectProblem(t, a.call("POST", "/v1/orders", alice, "key-"+name, body), http.StatusBadRequest, "malformed_request")
		assert.NotRegexp(t, goInternals, p.Detail, name)
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": 7, "exp": time.Now().Add(time.Hour).Unix()}).SignedString(testSecret)
	require.NoError(t, err)
	p := expectProblem(t, a.call("GET", "/v1/points", tok, "", nil), http.StatusUnauthorized, "invalid_token")
	assert.NotRegexp(t, goInternals, p.Detail, "a token whose sub is a number")
}
