package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/commercekit/commercekit/internal/testenv"
	"github.com/commercekit/commercekit/refserver/server"
)

// BenchmarkDenylistCheck measures what the logout denylist check adds to authenticated
// requests: the same request with a token that has a jti (checked: one lookup in SQLite in
// the embedded default, in Redis with MySQL) and with one that has none (the check is
// skipped). The stock read is public, so it never checks; it is measured for reference.
// The requests go to the handler in process (no network), one at a time.
//
//	go test -run '^$' -bench DenylistCheck -benchtime 3s ./refserver/server/
func BenchmarkDenylistCheck(b *testing.B) {
	for _, mode := range []struct {
		name string
		edit func(b *testing.B, c *server.Config)
	}{
		{"embedded-sqlite", func(b *testing.B, c *server.Config) { c.DBDSN = filepath.Join(b.TempDir(), "refserver.db") }},
		{"mysql-redis", func(b *testing.B, c *server.Config) {
			c.DBDriver, c.DBDSN = server.DriverMySQL, testenv.MySQLDSN(b)
			rdb := testenv.Redis(b)
			c.RedisAddr, c.RedisDB = rdb.Options().Addr, rdb.Options().DB
		}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			cfg := baseConfig()
			mode.edit(b, &cfg)
			srv, err := server.New(context.Background(), cfg)
			require.NoError(b, err)
			ctx, cancel := context.WithCancel(context.Background())
			wait := srv.Start(ctx)
			b.Cleanup(func() { cancel(); wait(); srv.Close() })
			h := srv.Handler()
			admin := token(b, "admin", true)
			benchCall(b, h, "POST", "/v1/products", admin, "", server.NewProductJSON{ID: "p1", Name: "P1", Price: 1000, Stock: 1_000_000_000},
				http.StatusCreated)

			withJTI := token(b, "bench-user", false)
			noJTI, err := jwt.NewWithClaims(jwt.SigningMethodHS256, server.Claims{RegisteredClaims: jwt.RegisteredClaims{
				Subject: "bench-user", IssuedAt: jwt.NewNumericDate(time.Now()), ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
			}}).SignedString(testSecret)
			require.NoError(b, err)
			order := placeOneUnit("p1")
			var orderID string
			for _, tok := range []struct{ name, token string }{{"jti", withJTI}, {"no-jti", noJTI}} {
				b.Run("place-order/"+tok.name, func(b *testing.B) {
					for i := 0; b.Loop(); i++ {
						rec := benchCall(b, h, "POST", "/v1/orders", tok.token, tok.name+"-"+strconv.Itoa(i), order, http.StatusCreated)
						if orderID == "" {
							var o server.OrderJSON
							require.NoError(b, json.Unmarshal(rec.Body.Bytes(), &o))
							orderID = o.ID
						}
					}
				})
				b.Run("read-order/"+tok.name, func(b *testing.B) {
					for b.Loop() {
						benchCall(b, h, "GET", "/v1/orders/"+orderID, tok.token, "", nil, http.StatusOK)
					}
				})
			}
			b.Run("stock-read/public", func(b *testing.B) {
				for b.Loop() {
					benchCall(b, h, "GET", "/v1/products/p1/stock", "", "", nil, http.StatusOK)
				}
			})
		})
	}
}

// placeOneUnit is an order of one unit of product.
func placeOneUnit(product string) server.PlaceOrderJSON {
	return server.PlaceOrderJSON{Lines: []server.LineJSON{{ProductID: product, Qty: 1}}}
}

// benchCall serves one request in process and checks its status.
func benchCall(b *testing.B, h http.Handler, method, path, tok, key string, body any, status int) *httptest.ResponseRecorder {
	var raw []byte
	if body != nil {
		var err error
		raw, err = json.Marshal(body)
		require.NoError(b, err)
	}
	req := httptest.NewRequest(method, path, bytes.NewReader(raw))
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if key != "" {
		req.Header.Set(server.IdempotencyKeyHeader, key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != status {
		b.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
	}
	return rec
}
