package server

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
)

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
