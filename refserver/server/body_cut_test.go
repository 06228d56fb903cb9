package server

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBodyCutOffIsTheClients: a client whose request body ends before its Content-Length
// (it went away or its connection broke mid-upload) gets 400 malformed_request on the
// routes that read the raw body (the Idempotency-Key middleware, the PG webhook). A cut
// body is the client's failure, not a dependency's: it must not be answered and counted
// as 503 dependency_unavailable (which pages whoever watches the backends).
func TestBodyCutOffIsTheClients(t *testing.T) {
	s := testServer()
	ran := false
	srv := httptest.NewServer(s.outer(s.idempotent(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ran = true }))))
	defer srv.Close()
	webhook := httptest.NewServer(s.outer(http.HandlerFunc(s.paymentWebhook)))
	defer webhook.Close()

	for name, url := range map[string]string{"idempotent route": srv.URL, "webhook": webhook.URL} {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", url[len("http://"):])
			require.NoError(t, err)
			defer conn.Close()
			_, err = conn.Write([]byte("POST /v1/orders HTTP/1.1\r\nHost: test\r\nIdempotency-Key: k1\r\n" +
				"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"lines\":"))
			require.NoError(t, err)
			require.NoError(t, conn.(*net.TCPConn).CloseWrite()) // the body stops 91 bytes short
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			require.NoError(t, err)
			defer resp.Body.Close()
			var p Problem
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&p))
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%+v", p)
			assert.Equal(t, "malformed_request", p.Code)
		})
	}
	assert.False(t, ran, "nothing ran")
}
