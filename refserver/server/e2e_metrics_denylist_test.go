package server_test

import (
	"database/sql"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/commercekit/commercekit/refserver/server"
)

// TestMetricsDenylistDownIsDocumented: an admin token's read of /metrics goes through the
// logout denylist like every authenticated request, so a denylist that cannot answer makes
// it 503 dependency_unavailable with Retry-After (never a pass), while the scrape token,
// which is no bearer JWT, still reads it. The OpenAPI document listed only 200, 401 and 403
// for GET /metrics: a client generated from it had no 503 to expect.
func TestMetricsDenylistDownIsDocumented(t *testing.T) {
	const scrape = "scrape-0123456789abcdef0123456789abcdef"
	var dsn string
	a := start(t, embedded, func(c *server.Config) { dsn, c.MetricsToken = c.DBDSN, scrape })
	db, err := sql.Open(sqliteshim.ShimName, "file:"+dsn+"?_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec("DROP TABLE member_denied_tokens")
	require.NoError(t, err)

	r := a.call("GET", "/metrics", token(t, "ops", true), "", nil)
	expectProblem(t, r, http.StatusServiceUnavailable, "dependency_unavailable")
	require.NotEmpty(t, r.Header.Get("Retry-After"))
	expect(t, a.call("GET", "/metrics", scrape, "", nil), http.StatusOK)

	var doc struct {
		Paths map[string]map[string]struct {
			Responses map[string]any `json:"responses"`
		} `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(expect(t, a.call("GET", "/openapi.json", "", "", nil), http.StatusOK).Body, &doc))
	require.Contains(t, doc.Paths["/metrics"]["get"].Responses, "503", "GET /metrics answers 503; the document must say so")
}
