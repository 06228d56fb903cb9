package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/commercekit/commercekit/commerce/cart"
)

// TestCartChangedFreesTheKey: 409 cart_changed tells the client to retry (OpenAPI:
// "409 cart_changed when it changed meanwhile: retry"), and nothing was placed, so the
// answer must not be kept for the Idempotency-Key: a retry with the same key orders the
// cart as it is now instead of replaying the 409 forever.
func TestCartChangedFreesTheKey(t *testing.T) {
	s := testServer()
	w := httptest.NewRecorder()
	s.writeError(w, httptest.NewRequest(http.MethodPost, "/v1/orders", nil), fmt.Errorf("commerce: %w", cart.ErrChanged))
	assert.Equal(t, http.StatusConflict, w.Code)
	assert.False(t, keepResponse(w.Code, w.Header()), "a cart_changed answer is not final for its key")

	w = httptest.NewRecorder()
	s.writeError(w, httptest.NewRequest(http.MethodPost, "/v1/orders", nil), cart.ErrEmpty)
	assert.True(t, keepResponse(w.Code, w.Header()), "cart_empty stays final")
}
