package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/commerce"
	"github.com/commercekit/commercekit/errcode"
)

// TestDependencyFailuresAre503: a dependency failure is 503 dependency_unavailable with
// Retry-After, whether a package wrapped it (errcode) or it slipped through raw, and wins
// over any business meaning the same error also carries.
func TestDependencyFailuresAre503(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	_, refused := net.Dial("tcp", addr) // a real "connection refused"
	require.Error(t, refused)

	s := testServer()
	for name, tc := range map[string]struct {
		err   error
		retry int
	}{
		"raw transport error":     {fmt.Errorf("loading the order: %w", refused), 1},
		"wrapped by a backend":    {errcode.Unavailable("redis", refused), 1},
		"with a retry hint":       {&errcode.UnavailableError{Dependency: "redis (stock rebuilding)", RetryAfter: 2500 * time.Millisecond}, 3},
		"beside a business error": {errors.Join(commerce.ErrOutOfStock, errcode.Unavailable("redis", refused)), 1},
	} {
		t.Run(name, func(t *testing.T) {
			p := s.problemFor(tc.err)
			assert.Equal(t, http.StatusServiceUnavailable, p.Status)
			assert.Equal(t, "dependency_unavailable", p.Code)
			assert.Equal(t, tc.retry, p.RetryAfter)
			assert.NotContains(t, p.Detail, addr, "internals are not shown")
		})
	}
	assert.Equal(t, http.StatusInternalServerError, s.problemFor(errors.New("a bug")).Status)
}
