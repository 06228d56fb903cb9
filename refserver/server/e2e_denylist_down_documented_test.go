package server_test

import (
	"database/sql"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/commercekit/commercekit/refserver/server"
)

// TestDenylistDownIsDocumentedEverywhere: every bearer token is checked against the logout
// denylist before its route runs, so a denylist that cannot answer makes every
// authenticated operation 503 dependency_unavailable with Retry-After — reads included.
// The OpenAPI document listed no 503 for eight authenticated reads (GET /v1/orders,
// /v1/points, /v1/coupons, ...): a client generated from it had no 503 to expect there.
// Each authenticated operation of the document is called with a valid admin token while
// the denylist's table is gone; each answers 503, and each documents it.
func TestDenylistDownIsDocumentedEverywhere(t *testing.T) {
	var dsn string
	a := start(t, embedded, func(c *server.Config) { dsn = c.DBDSN })
	var doc struct {
		Paths map[string]map[string]struct {
			Security  []map[string]any `json:"security"`
			Responses map[string]any   `json:"responses"`
		} `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(expect(t, a.call("GET", "/openapi.json", "", "", nil), http.StatusOK).Body, &doc))

	db, err := sql.Open(sqliteshim.ShimName, "file:"+dsn+"?_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec("DROP TABLE member_denied_tokens")
	require.NoError(t, err)

	admin := token(t, "ops", true)
	param := regexp.MustCompile(`\{[^}]+\}`)
	n := 0
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if len(op.Security) == 0 {
				continue
			}
			n++
			method = strings.ToUpper(method)
			r := a.call(method, param.ReplaceAllString(path, "x1"), admin, "", nil)
			expectProblem(t, r, http.StatusServiceUnavailable, "dependency_unavailable")
			assert.NotEmpty(t, r.Header.Get("Retry-After"), "%s %s", method, path)
			assert.Contains(t, op.Responses, "503", "%s %s answers 503 when the denylist is down; the document does not list it", method, path)
		}
	}
	require.Greater(t, n, 20, "authenticated operations found in the document")
}
