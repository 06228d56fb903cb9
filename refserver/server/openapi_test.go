package server

import (
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
)

// TestOpenAPIMatchesRoutes fails when the route table and /openapi.json disagree: a route
// the document lacks, an operation the server does not serve, or a write route without its
// Idempotency-Key parameter or security.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI    string                                `json:"openapi"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Responses map[string]json.RawMessage `json:"responses"`
		} `json:"components"`
	}
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	require.True(t, strings.HasPrefix(doc.OpenAPI, "3."))

	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	s := &Server{metrics: newMetrics(func(error) string { return "" })}
	var served []string
	for _, rt := range s.routes() {
		served = append(served, rt.Pattern())
		var op struct {
			Security   []map[string][]string `json:"security"`
			Parameters []struct {
				Ref  string `json:"$ref"`
				Name string `json:"name"`
			} `json:"parameters"`
			Responses   map[string]json.RawMessage `json:"responses"`
			RequestBody json.RawMessage            `json:"requestBody"`
		}
		raw, ok := doc.Paths[rt.Path][strings.ToLower(rt.Method)]
		if !ok {
			continue // reported below
		}
		require.NoError(t, json.Unmarshal(raw, &op), rt.Pattern())
		assert.Equal(t, rt.Auth != AuthNone, len(op.Security) > 0, "%s: security in the document vs the route's auth", rt.Pattern())
		hasKey := slices.ContainsFunc(op.Parameters, func(p struct {
			Ref  string `json:"$ref"`
			Name string `json:"name"`
		}) bool {
			return strings.HasSuffix(p.Ref, "/IdempotencyKey")
		})
		if rt.Idempotent {
			assert.True(t, hasKey, "%s requires an Idempotency-Key; the document does not say so", rt.Pattern())
		}
		if rt.Write && rt.Auth != AuthNone {
			assert.Contains(t, op.Responses, "429", "%s is rate-limited", rt.Pattern())
		}
		// A dead letter's route takes any ID (the relay's, a consumer's): one it does not hold is 404.
		if strings.Contains(rt.Path, "{") && !strings.HasPrefix(rt.Path, "/v1/admin/outbox/") && !strings.HasSuffix(rt.Path, "/dead-letters/{id}/skip") {
			assert.Contains(t, op.Responses, "400", "%s: a malformed ID in the path is 400", rt.Pattern())
		}
		if op.RequestBody != nil {
			assert.Contains(t, op.Responses, "413", "%s reads a body, which has a limit", rt.Pattern())
		}
		for status, raw := range op.Responses {
			headers := responseHeaders(t, doc.Components.Responses, raw)
			switch {
			case status == "429" || status == "503":
				assert.Contains(t, headers, "Retry-After", "%s %s", rt.Pattern(), status)
			case status == "201" && rt.Idempotent:
				assert.Contains(t, headers, "Location", "%s %s", rt.Pattern(), status)
			}
			if rt.Idempotent && strings.HasPrefix(status, "2") {
				assert.Contains(t, headers, "Idempotent-Replayed", "%s %s", rt.Pattern(), status)
			}
		}
	}
	sort.Strings(documented)
	sort.Strings(served)
	assert.Equal(t, served, documented, "routes served vs operations documented")
}

// responseHeaders returns the headers a response of the document declares, following a
// $ref to the shared responses.
func responseHeaders(t *testing.T, shared map[string]json.RawMessage, raw json.RawMessage) map[string]json.RawMessage {
	var r struct {
		Ref     string                     `json:"$ref"`
		Headers map[string]json.RawMessage `json:"headers"`
	}
	require.NoError(t, json.Unmarshal(raw, &r))
	if name, ok := strings.CutPrefix(r.Ref, "#/components/responses/"); ok {
		require.Contains(t, shared, name)
		return responseHeaders(t, shared, shared[name])
	}
	return r.Headers
}

// TestOpenAPIServed checks the document is served as JSON.
func TestOpenAPIServed(t *testing.T) {
	s := testServer()
	rec := serve(s, http.MethodGet, "/openapi.json", nil)
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	assert.JSONEq(t, string(openAPI), rec.Body.String())
}

// TestOpenAPIDocumentsUnpaidLimit: the cap on units held unpaid is answered with the 422
// the document describes for placing an order.
func TestOpenAPIDocumentsUnpaidLimit(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			Responses map[string]struct {
				Description string `json:"description"`
			} `json:"responses"`
		} `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	assert.Contains(t, doc.Paths["/v1/orders"]["post"].Responses["422"].Description, "unpaid_limit_reached")

	p := (&Server{}).problemFor(&commerce.UnpaidLimitError{UserID: "u", ProductID: "kbd", Held: 20, Requested: 1, Limit: 20})
	assert.Equal(t, http.StatusUnprocessableEntity, p.Status)
	assert.Equal(t, "unpaid_limit_reached", p.Code)
}
